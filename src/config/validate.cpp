// Cross-field rules, one per check; each message names the keys involved and their values, so
// the fix is obvious. Single-field type errors are the loader's job; ranges are checked here.
#include "latentmoe/config/validate.h"

#include <fmt/format.h>

#include <cmath>

#include "latentmoe/train/batch_schedule.h"
#include "latentmoe/util/error.h"

namespace latentmoe::config {

namespace {
class Rules {
 public:
  void require(bool ok, const std::string& message) {
    if (!ok) violations.push_back(message);
  }
  void positive(int64_t value, const char* key) { require(value > 0, fmt::format("{} must be > 0, got {}", key, value)); }
  void non_negative(int64_t value, const char* key) {
    require(value >= 0, fmt::format("{} must be >= 0, got {}", key, value));
  }
  void positive(double value, const char* key) { require(value > 0, fmt::format("{} must be > 0, got {}", key, value)); }
  void non_negative(double value, const char* key) {
    require(value >= 0, fmt::format("{} must be >= 0, got {}", key, value));
  }
  void probability(double value, const char* key) {
    require(value >= 0 && value <= 1, fmt::format("{} must be in [0, 1], got {}", key, value));
  }
  void in_unit_interval(double value, const char* key, bool allow_zero) {
    require((allow_zero ? value >= 0 : value > 0) && value < 1,
            fmt::format("{} must be in {}0, 1), got {}", key, allow_zero ? "[" : "(", value));
  }
  std::vector<std::string> violations;
};

void check_model(const ModelConfig& m, Rules& r) {
  r.positive(m.vocab_size, "model.vocab_size");
  r.positive(m.hidden_size, "model.hidden_size");
  r.positive(m.num_hidden_layers, "model.num_hidden_layers");
  r.positive(m.num_attention_heads, "model.num_attention_heads");
  r.positive(m.rms_norm_eps, "model.rms_norm_eps");
  r.positive(m.init_std, "model.init_std");
  r.positive(m.rope_theta, "model.rope_theta");
  r.positive(m.max_position_embeddings, "model.max_position_embeddings");
  r.non_negative(m.num_nextn_predict_layers, "model.num_nextn_predict_layers");
  r.non_negative(m.first_k_dense_replace, "model.first_k_dense_replace");
  r.non_negative(m.n_routed_experts, "model.n_routed_experts");

  const bool has_dense = m.first_k_dense_replace > 0 || m.n_routed_experts == 0;
  if (has_dense) r.positive(m.intermediate_size, "model.intermediate_size (dense FFN layers exist)");
  r.require(m.first_k_dense_replace <= m.num_hidden_layers,
            fmt::format("model.first_k_dense_replace ({}) must be <= model.num_hidden_layers ({})",
                        m.first_k_dense_replace, m.num_hidden_layers));

  if (m.n_routed_experts > 0) {
    r.require(m.num_experts_per_tok >= 1 && m.num_experts_per_tok <= m.n_routed_experts,
              fmt::format("model.num_experts_per_tok ({}) must be in [1, model.n_routed_experts ({})]",
                          m.num_experts_per_tok, m.n_routed_experts));
  }
  // Each layer type's own rules (config/layer_choice.h).
  for (const LayerChoice* choice : {&m.attention, &m.router, &m.ffn}) {
    const LayerTypeInfo* info = find_layer_type(choice->family(), choice->type());
    if (!info) {
      std::string known;
      for (const auto& n : layer_type_names(choice->family())) known += (known.empty() ? "" : ", ") + n;
      r.require(false, fmt::format("model.{}.type '{}' is not registered (registered: {})", choice->family(),
                                   choice->type(), known));
    } else if (info->validate) {
      info->validate(m, r.violations);
    }
  }
  const RopeScalingConfig& y = m.rope_scaling;
  if (y.type == "yarn") {
    r.require(y.factor >= 1.0, fmt::format("model.rope_scaling.factor must be >= 1 with type 'yarn', got {}", y.factor));
    r.positive(y.original_max_position_embeddings, "model.rope_scaling.original_max_position_embeddings");
    r.require(y.beta_fast > y.beta_slow && y.beta_slow > 0,
              fmt::format("model.rope_scaling.beta_fast ({}) must be > model.rope_scaling.beta_slow ({}) > 0",
                          y.beta_fast, y.beta_slow));
    r.non_negative(y.mscale, "model.rope_scaling.mscale");
    r.non_negative(y.mscale_all_dim, "model.rope_scaling.mscale_all_dim");
  }
}

// Token counts are int64: the run's tokens (plus one step of slack) must fit with room to spare.
constexpr __int128 kMaxRunTokens = static_cast<__int128>(1) << 62;
bool run_tokens_fit(const TrainConfig& t) {
  const __int128 step_tokens = static_cast<__int128>(t.global_batch_size) * t.seq_len;
  return static_cast<__int128>(t.steps) * step_tokens + t.tokens + step_tokens < kMaxRunTokens;
}

// The batch ramp is planned only when its keys are valid; the checks that need the plan skip otherwise.
bool ramp_plannable(const TrainConfig& t) {
  const BatchRampConfig& b = t.batch_ramp;
  const bool ramp_ok = b.start == 0 ? b.increment == 0 && b.tokens == 0
                                    : b.start > 0 && b.start < t.global_batch_size && b.increment > 0 && b.tokens > 0;
  return ramp_ok && t.seq_len > 0 && t.global_batch_size > 0 && t.steps >= 0 && t.tokens >= 0 &&
         (t.steps > 0) != (t.tokens > 0) && run_tokens_fit(t);
}

void check_batch_ramp(const TrainConfig& t, int64_t world_size, Rules& r) {
  const BatchRampConfig& b = t.batch_ramp;
  if (b.start == 0) {
    r.require(b.increment == 0 && b.tokens == 0,
              fmt::format("train.batch_ramp.increment ({}) and train.batch_ramp.tokens ({}) are set but "
                          "train.batch_ramp.start is 0 (no ramp); set start > 0 or leave all three at 0",
                          b.increment, b.tokens));
    return;
  }
  r.require(b.start > 0 && b.start < t.global_batch_size,
            fmt::format("train.batch_ramp.start ({}) must be in [1, train.global_batch_size ({})): the ramp grows to "
                        "the global batch", b.start, t.global_batch_size));
  r.positive(b.increment, "train.batch_ramp.increment");
  r.positive(b.tokens, "train.batch_ramp.tokens");
  r.require(t.grad_accum_steps == 0,
            fmt::format("train.grad_accum_steps ({}) must be 0 with a batch ramp: the micro-batches per step follow the "
                        "ramp (global batch / (micro-batch x data-parallel ranks))", t.grad_accum_steps));
  if (!ramp_plannable(t) || t.micro_batch_size <= 0) return;
  const train::BatchSchedule plan(t);
  r.require(b.tokens < plan.total_tokens(),
            fmt::format("train.batch_ramp.tokens ({}) must be below the run's {} tokens ({}): the batch would never reach "
                        "train.global_batch_size ({})", b.tokens, plan.total_tokens(),
                        t.tokens > 0 ? "train.tokens" : "train.steps x the ramp's batches", t.global_batch_size));
  const int64_t ranks = world_size == kUnknownWorldSize ? 1 : world_size;
  const int64_t per_pass = t.micro_batch_size * ranks;
  const std::vector<int64_t> values = plan.batch_values();
  for (size_t k = 0; k + 1 < values.size(); ++k) {  // the last value, the global batch, has its own rule below
    if (values[k] % per_pass == 0) continue;
    const std::string which = fmt::format("start {} + {} x increment {}", b.start, (values[k] - b.start) / b.increment,
                                          b.increment);
    r.require(false, fmt::format("train.batch_ramp: the global batch {} ({}) is not divisible by "
                                 "train.micro_batch_size ({}){} = {}; every ramp value must split over the ranks and "
                                 "micro-batches (allowed: multiples of {})",
                                 values[k], which, t.micro_batch_size,
                                 world_size == kUnknownWorldSize ? "" : fmt::format(" x data-parallel ranks ({})", ranks),
                                 per_pass, per_pass));
    return;  // the first value that does not divide
  }
}

void check_train(const Config& c, int64_t world_size, Rules& r) {
  const TrainConfig& t = c.train;
  r.non_negative(t.steps, "train.steps");
  r.non_negative(t.tokens, "train.tokens");
  r.require((t.steps > 0) != (t.tokens > 0),
            fmt::format("exactly one of train.steps and train.tokens must be > 0 (the run is sized in steps or in "
                        "tokens), got train.steps={} and train.tokens={}", t.steps, t.tokens));
  r.require(run_tokens_fit(t),
            fmt::format("the run is too long to count its tokens: train.steps ({}) x train.global_batch_size ({}) x "
                        "train.seq_len ({}), or train.tokens ({}), must stay below 2^62", t.steps, t.global_batch_size,
                        t.seq_len, t.tokens));
  check_batch_ramp(t, world_size, r);
  r.positive(t.global_batch_size, "train.global_batch_size");
  r.positive(t.micro_batch_size, "train.micro_batch_size");
  r.non_negative(t.grad_accum_steps, "train.grad_accum_steps");
  r.positive(t.seq_len, "train.seq_len");
  r.non_negative(t.grad_clip_norm, "train.grad_clip_norm");
  r.non_negative(t.mtp_loss_weight, "train.mtp_loss_weight");
  r.non_negative(t.mtp_loss_weight_final, "train.mtp_loss_weight_final");
  r.non_negative(t.mtp_loss_weight_switch_tokens, "train.mtp_loss_weight_switch_tokens");
  r.non_negative(t.seq_aux_loss_alpha, "train.seq_aux_loss_alpha");
  r.non_negative(t.router_z_loss_weight, "train.router_z_loss_weight");
  r.non_negative(t.bias_update_speed, "train.bias_update_speed");
  r.non_negative(t.bias_update_freeze_tokens, "train.bias_update_freeze_tokens");
  r.non_negative(t.eval_interval, "train.eval_interval");
  r.non_negative(t.eval_batches, "train.eval_batches");
  r.non_negative(t.spike_zscore, "train.spike_zscore");
  r.require(t.spike_window >= 2, fmt::format("train.spike_window must be >= 2, got {}", t.spike_window));
  r.require(t.spike_action != "stop" || t.spike_zscore > 0,
            "train.spike_action=stop needs train.spike_zscore > 0 (with 0 no step is ever a spike)");
  r.non_negative(t.replica_check_interval, "train.replica_check_interval");
  r.non_negative(t.collapse_warn_steps, "train.collapse_warn_steps");
  r.require(t.seq_len <= c.model.max_position_embeddings,
            fmt::format("train.seq_len ({}) must be <= model.max_position_embeddings ({})", t.seq_len,
                        c.model.max_position_embeddings));
  if (t.global_batch_size <= 0 || t.micro_batch_size <= 0) return;
  if (world_size == kUnknownWorldSize) {
    r.require(t.global_batch_size % t.micro_batch_size == 0,
              fmt::format("train.global_batch_size ({}) must be divisible by train.micro_batch_size ({})",
                          t.global_batch_size, t.micro_batch_size));
    return;
  }
  const int64_t per_pass = t.micro_batch_size * world_size;
  if (t.grad_accum_steps > 0) {
    r.require(per_pass * t.grad_accum_steps == t.global_batch_size,
              fmt::format("train.global_batch_size ({}) must equal train.micro_batch_size ({}) x "
                          "train.grad_accum_steps ({}) x data-parallel ranks ({}) = {}; set "
                          "train.grad_accum_steps=0 to derive it",
                          t.global_batch_size, t.micro_batch_size, t.grad_accum_steps, world_size,
                          per_pass * t.grad_accum_steps));
  } else {
    r.require(t.global_batch_size % per_pass == 0,
              fmt::format("train.global_batch_size ({}) must be divisible by train.micro_batch_size ({}) x "
                          "data-parallel ranks ({}) = {}",
                          t.global_batch_size, t.micro_batch_size, world_size, per_pass));
  }
}

void check_schedule(const Config& c, Rules& r) {
  const ScheduleConfig& s = c.schedule;
  r.positive(c.optimizer.lr, "optimizer.lr");
  r.in_unit_interval(c.optimizer.beta1, "optimizer.beta1", true);
  r.in_unit_interval(c.optimizer.beta2, "optimizer.beta2", true);
  r.positive(c.optimizer.eps, "optimizer.eps");
  r.non_negative(c.optimizer.weight_decay, "optimizer.weight_decay");
  r.non_negative(s.warmup, "schedule.warmup");
  r.non_negative(s.decay_start, "schedule.decay_start");
  r.non_negative(s.decay_length, "schedule.decay_length");
  r.non_negative(s.min_lr, "schedule.min_lr");
  r.require(s.min_lr <= c.optimizer.lr, fmt::format("schedule.min_lr ({}) must be <= optimizer.lr ({})", s.min_lr,
                                                    c.optimizer.lr));
  if (ramp_plannable(c.train)) {
    const int64_t steps = train::BatchSchedule(c.train).total_steps();
    r.require(s.warmup <= steps,
              c.train.tokens > 0 ? fmt::format("schedule.warmup ({} steps) must be <= the {} steps of train.tokens ({})",
                                               s.warmup, steps, c.train.tokens)
                                 : fmt::format("schedule.warmup ({} steps) must be <= train.steps ({})", s.warmup, steps));
  }
  r.require(s.stepdown_at.size() == s.stepdown_lr.size(),
            fmt::format("schedule.stepdown_at ({} entries) and schedule.stepdown_lr ({} entries) must have the same length",
                        s.stepdown_at.size(), s.stepdown_lr.size()));
  if (s.type != "multiphase") {
    r.require(s.stepdown_at.empty() && s.decay_start == 0,
              fmt::format("schedule.stepdown_at/decay_start are only used with schedule.type 'multiphase', got type '{}'",
                          s.type));
  }
  for (size_t i = 1; i < s.stepdown_at.size(); ++i) {
    r.require(s.stepdown_at[i] > s.stepdown_at[i - 1],
              fmt::format("schedule.stepdown_at must be strictly increasing, got {} then {}", s.stepdown_at[i - 1],
                          s.stepdown_at[i]));
  }
  if (s.type == "multiphase" && !s.stepdown_at.empty()) {
    const int64_t decay_end = s.decay_start + s.decay_length;
    r.require(s.decay_length > 0 && s.stepdown_at.front() >= decay_end,
              fmt::format("schedule.stepdown_at[0] ({}) must come after the cosine decay ends at "
                          "schedule.decay_start + schedule.decay_length = {} (with decay_length > 0)",
                          s.stepdown_at.front(), decay_end));
  }
}

void check_rest(const Config& c, int64_t world_size, Rules& r) {
  const DataConfig& d = c.data;
  r.require(d.weights.empty() || d.weights.size() == d.paths.size(),
            fmt::format("data.weights has {} entries but data.paths has {}; give one weight per path or none",
                        d.weights.size(), d.paths.size()));
  for (double w : d.weights) r.require(w >= 0, fmt::format("data.weights must be >= 0, got {}", w));
  r.in_unit_interval(d.valid_fraction, "data.valid_fraction", true);
  r.probability(d.fim_rate, "data.fim_rate");
  r.probability(d.fim_spm_rate, "data.fim_spm_rate");
  r.require(d.num_workers >= 0 && d.num_workers <= 64,
            fmt::format("data.num_workers must be in [0, 64] (0 = prepare batches on the training thread), got {}", d.num_workers));

  const ParallelConfig& p = c.parallel;
  r.positive(p.ep, "parallel.ep");
  r.require(p.zero_stage == 0 || p.zero_stage == 1,
            fmt::format("parallel.zero_stage must be 0 or 1, got {}", p.zero_stage));
  r.positive(p.bucket_size_mb, "parallel.bucket_size_mb");
  r.positive(p.timeout_s, "parallel.timeout_s");
  if (p.ep > 0) {
    r.require(world_size == kUnknownWorldSize || world_size % p.ep == 0, fmt::format("parallel.ep ({}) must divide the world size ({} ranks)", p.ep,
                                                  world_size));
    if (c.model.n_routed_experts > 0) {
      r.require(c.model.n_routed_experts % p.ep == 0,
                fmt::format("model.n_routed_experts ({}) must be divisible by parallel.ep ({})",
                            c.model.n_routed_experts, p.ep));
    }
  }
  r.require(!(p.backend == "nccl" && c.train.device == "cpu"),
            "parallel.backend 'nccl' needs train.device 'cuda' or 'auto', got train.device 'cpu'");

  // A bf16 moment moves only if the step changes it by at least half a bf16 unit (2^-9 of its value
  // at worst): with 1 - beta below 2^-8 the decay rounds back to the old value and the moment
  // never shrinks.
  for (const auto& [key, beta] : {std::pair{"optimizer.beta1", c.optimizer.beta1}, std::pair{"optimizer.beta2", c.optimizer.beta2}}) {
    r.require(c.optimizer.moments_dtype != "bf16" || 1.0 - beta >= 0x1p-8,
              fmt::format("optimizer.moments_dtype=bf16 needs 1 - {} >= 2^-8 (beta <= 0.996): with {}={} each "
                          "step's decay is below bf16's rounding and the moment would stop decaying; lower it or "
                          "use moments_dtype fp32",
                          key, key, beta));
  }
  r.require(!(c.precision.fp8_pow2_scales && c.precision.fp8 == "none"),
            "precision.fp8_pow2_scales=true rounds FP8 scales, but precision.fp8 is 'none'; set precision.fp8 "
            "to blockwise or tensorwise, or drop fp8_pow2_scales");

  r.non_negative(c.checkpoint.interval, "checkpoint.interval");
  r.positive(c.checkpoint.keep_last, "checkpoint.keep_last");
  r.require(!c.checkpoint.dir.empty(), "checkpoint.dir must not be empty");
  r.positive(c.logging.interval, "logging.interval");
  r.non_negative(c.logging.peak_tflops, "logging.peak_tflops");
}
}  // namespace

std::vector<std::string> config_violations(const Config& cfg, int64_t world_size) {
  Rules rules;
  rules.require(world_size >= 1 || world_size == kUnknownWorldSize,
                fmt::format("world size must be >= 1, got {}", world_size));
  Config copy = cfg;
  for_each_field(describe_root(copy), [&](const std::string& path, const FieldInfo& f) {
    auto check_finite = [&](double v) {
      rules.require(std::isfinite(v), fmt::format("{} must be a finite number, got {}", path, v));
    };
    if (auto* d = std::get_if<double*>(&f.ref)) check_finite(**d);
    if (auto* list = std::get_if<std::vector<double>*>(&f.ref)) {
      for (double v : **list) check_finite(v);
    }
  });
  check_model(cfg.model, rules);
  check_train(cfg, world_size, rules);
  check_schedule(cfg, rules);
  check_rest(cfg, world_size, rules);
  return rules.violations;
}

void validate_config(const Config& cfg, int64_t world_size) {
  const std::vector<std::string> violations = config_violations(cfg, world_size);
  if (violations.empty()) return;
  std::string msg = fmt::format("invalid configuration ({} rule{} violated):", violations.size(),
                                violations.size() == 1 ? "" : "s");
  for (const auto& v : violations) msg += "\n  " + v;
  throw ConfigError(msg);
}

}  // namespace latentmoe::config
