// The training loop: micro-batches with gradient accumulation, losses, the non-finite guard and
// spike skip, global-norm clipping, AdamW, then once per step the expert-bias update.
#include "latentmoe/train/trainer.h"

#include <ATen/autocast_mode.h>
#include <ATen/record_function.h>

#include "latentmoe/ops/fp8_stats.h"
#include "latentmoe/ops/linear.h"
#include <fmt/format.h>
#include <fmt/ranges.h>
#include <unistd.h>

#include <atomic>
#include <bit>
#include <chrono>
#include <cmath>
#include <csignal>
#include <filesystem>
#include <fstream>
#include <thread>
#include <nlohmann/json.hpp>

#include "latentmoe/config/loader.h"
#include "latentmoe/io/model_io.h"
#include "latentmoe/model/param_count.h"
#include "latentmoe/train/adamw_cpu.h"
#include "latentmoe/train/losses.h"
#include "latentmoe/util/error.h"
#include "latentmoe/util/hash.h"
#include "latentmoe/util/log.h"
#include "latentmoe/util/runtime_info.h"

namespace latentmoe::train {

namespace fs = std::filesystem;
using json = nlohmann::json;

namespace {
std::atomic<int> g_signal{0};
extern "C" void on_signal(int sig) { g_signal = sig; }

// bf16 autocast for the duration of a scope (fp32 master weights stay untouched).
class AutocastScope {
 public:
  AutocastScope(bool enabled, c10::DeviceType device) : enabled_(enabled), device_(device) {
    if (!enabled_) return;
    previous_ = at::autocast::is_autocast_enabled(device_);
    at::autocast::set_autocast_enabled(device_, true);
    at::autocast::set_autocast_dtype(device_, at::kBFloat16);
  }
  ~AutocastScope() {
    if (!enabled_) return;
    at::autocast::set_autocast_enabled(device_, previous_);
    at::autocast::clear_cache();
  }

 private:
  bool enabled_, previous_ = false;
  c10::DeviceType device_;
};

torch::Tensor to_tensor(const data::Batch& b) {
  return torch::from_blob(const_cast<int32_t*>(b.tokens.data()), {b.size, b.width}, torch::kInt).to(torch::kLong);
}

std::string human_duration(double seconds) {
  const auto s = static_cast<int64_t>(seconds);
  return s >= 3600 ? fmt::format("{}h{:02}m", s / 3600, (s % 3600) / 60) : fmt::format("{}m{:02}s", s / 60, s % 60);
}

int64_t env_int(const char* name, int64_t fallback) {
  const char* v = std::getenv(name);
  return v && *v ? std::stoll(v) : fallback;
}
}  // namespace

Trainer::Trainer(config::Config cfg, parallel::Communicator* comm) : cfg_(std::move(cfg)), comm_(comm) {
  const auto& t = cfg_.train;
  parallel_ = std::make_unique<parallel::Parallelism>(cfg_, comm_);
  rank_ = parallel_->rank();
  world_ = parallel_->world_size();
  batches_ = std::make_unique<BatchSchedule>(t);
  if (t.device == "cuda") throw ConfigError("train.device 'cuda': the CUDA training path is not available yet; use 'cpu' or 'auto'");
  bf16_ = cfg_.precision.compute_dtype == "bf16";
  ops::set_cpu_low_precision_gemm(ops::parse_low_precision_gemm(cfg_.precision.cpu_low_precision_gemm));
  if (bf16_) {
    const ops::GemmChoice gemm = ops::cpu_low_precision_gemm(at::kBFloat16);
    const std::string measured =
        gemm.fp32_gflops > 0 ? fmt::format(" (measured: bf16 GEMM {:.1f} GFLOPS, fp32 {:.1f})", gemm.native_gflops,
                                           gemm.fp32_gflops)
                             : "";
    LMOE_INFO("bf16 compute: {} GEMMs and attention, precision.cpu_low_precision_gemm={}{}",
              gemm.emulated ? "emulated (fp32 kernels on bf16-rounded operands)" : "native bf16",
              cfg_.precision.cpu_low_precision_gemm, measured);
  }
  setup_data();
  // Each rank builds only its routed experts (expert parallelism); every tensor's initial values
  // come from its own stream keyed by (seed, its global name), the same in any layout.
  torch::manual_seed(static_cast<uint64_t>(cfg_.seed));
  model_ = model::DeepSeekV3(cfg_.model, parallel_->model_build(static_cast<uint64_t>(cfg_.seed)));
  model_->set_recompute(model::parse_recompute(t.recompute));
  fp8_ = {.scaling = ops::fp8::parse_scaling(cfg_.precision.fp8), .pow2_scales = cfg_.precision.fp8_pow2_scales};
  if (fp8_.enabled()) {
    model_->set_fp8(fp8_);
    LMOE_INFO("fp8 {}: the decoder blocks' projections quantize to e4m3 ({} scales){}",
              cfg_.precision.fp8, fp8_.pow2_scales ? "power-of-two" : "fp32",
              t.device == "cpu" || !torch::cuda::is_available() ? ", emulated on the CPU (docs/fp8.md)" : "");
  }
  std::vector<std::pair<std::string, torch::Tensor>> params;
  for (const auto& p : model_->named_parameters()) params.emplace_back(p.key(), p.value());
  optimizer_ = std::make_unique<AdamW>(params, cfg_.optimizer);
  std::vector<std::pair<std::string, torch::Tensor>> trainable;
  for (const auto& [name, p] : params) {
    if (p.requires_grad()) trainable.emplace_back(name, p);
  }
  parallel_->attach(*model_, trainable, t.spike_action == "rerun");
  if (const auto ranges = parallel_->optimizer_ranges(); !ranges.empty()) optimizer_->restrict_to_ranges(ranges);
  int64_t held = 0, state = 0;
  for (size_t i = 0; i < optimizer_->size(); ++i) {
    held += optimizer_->slot(i).param.numel();
    state += 2 * optimizer_->slot(i).length;
  }
  const auto counts = model::count_parameters(cfg_.model);
  LMOE_INFO("{}: this rank holds {} of {} parameters and {} AdamW moment elements ({} ZeRO-1)", parallel_->describe(),
            held, counts.total + counts.mtp_total, state, parallel_->zero1() ? "with" : "without");
  schedule_ = std::make_unique<LrSchedule>(cfg_.schedule, cfg_.optimizer.lr, *batches_);
  std::vector<torch::Tensor> biases;
  for (const auto& b : model_->named_buffers()) {
    if (b.key().find("e_score_correction_bias") != std::string::npos) {
      biases.push_back(b.value());
      moe_layer_names_.push_back(b.key().substr(0, b.key().find(".mlp.gate")));
    }
  }
  // Test hook: the balancing update with its sign flipped (a deliberately wrong change for the golden-check tests).
  const double gamma = env_int("LATENTMOE_TEST_FLIP_BALANCE_SIGN", 0) == 1 ? -t.bias_update_speed : t.bias_update_speed;
  balancer_ = std::make_unique<ExpertBalancer>(biases, gamma, t.bias_update_freeze_tokens);
  setup_fault_checks();
  idle_steps_.assign(biases.size() * static_cast<size_t>(cfg_.model.n_routed_experts), 0);
  checkpointer_ = std::make_unique<Checkpointer>(cfg_.checkpoint.dir, cfg_.checkpoint.keep_last);
  // Every rank computes the same (reduced) metrics; rank 0 writes them.
  metrics_ = std::make_unique<MetricsLogger>(cfg_.logging.dir, rank_ == 0 && cfg_.logging.jsonl,
                                             rank_ == 0 && cfg_.logging.tensorboard);
  const auto flops = model::forward_flops_per_token(cfg_.model, t.seq_len);
  train_flops_per_token_ = 3.0 * (flops.forward + flops.mtp_forward);
}

StepRecord Trainer::train_step() {
  const auto& t = cfg_.train;
  StepRecord r;
  r.step = step_ + 1;
  r.lr = schedule_->lr(step_, tokens_seen_);
  r.global_batch = batches_->global_batch(tokens_seen_);
  optimizer_->zero_grad();
  model_->train();
  r.mtp_weight = mtp_loss_weight_at(cfg_, tokens_seen_);
  r.bias_update_speed = bias_update_speed_at(t, tokens_seen_);
  const int64_t accum = accum_steps(r.global_batch);
  // FP8 statistics on the steps that are logged (their cost is a few reductions per projection).
  const bool observe_fp8 = fp8_.enabled() && logged_step(r.step);
  if (observe_fp8) ops::fp8::take_stats();  // drops what a step that threw may have left
  ops::fp8::set_stats_enabled(observe_fp8);
  struct StopObserving {
    ~StopObserving() { ops::fp8::set_stats_enabled(false); }
  } stop_observing;
  const std::vector<data::BatchPrefetcher::Request> micro_batches = step_requests(consumed_samples_, r.global_batch);
  if (prefetcher_) {  // this step's micro-batches (queued a step ago) and the next step's
    std::vector<data::BatchPrefetcher::Request> requests = micro_batches;
    const int64_t next_tokens = tokens_seen_ + r.global_batch * t.seq_len;
    const auto next = step_requests(consumed_samples_ + r.global_batch, batches_->global_batch(next_tokens));
    requests.insert(requests.end(), next.begin(), next.end());
    prefetcher_->prefetch(requests);
  }
  for (int64_t micro = 0; micro < accum; ++micro) {
    const auto [first, count] = micro_batches[static_cast<size_t>(micro)];
    const data::Batch batch = prefetcher_ ? prefetcher_->get(first, count) : train_data_->rank_batch(first, count, 0, 1);
    const torch::Tensor tokens = to_tensor(batch);
    LossBreakdown losses;
    {
      AutocastScope autocast(bf16_, c10::DeviceType::CPU);
      const model::ModelOutput out = model_(tokens.narrow(1, 0, t.seq_len), cfg_.model.num_nextn_predict_layers > 0,
                                            /*caches=*/nullptr, /*compute_logits=*/false);
      RECORD_FUNCTION("latentmoe.loss", c10::ArrayRef<const c10::IValue>{});
      losses = compute_losses(out, tokens, cfg_, r.mtp_weight, ignored_label_);
      for (size_t l = 0; l < out.routing.size(); ++l) balancer_->add_counts(l, out.routing[l].expert_counts);
    }
    // Test hook: this rank's loss (and so its gradients) blown up at one step, on its first
    // execution only ("once": a fault of the machine) or on every execution ("always": the data).
    if (test_spike_.step == r.step && test_spike_.rank == rank_ && (test_spike_.always || !test_spike_.fired)) {
      losses.total = losses.total * 50.0;
    }
    parallel_->begin_backward(micro == accum - 1);
    (losses.total / static_cast<double>(accum)).backward();
    const double scale = 1.0 / static_cast<double>(accum);
    r.loss += losses.total.item<double>() * scale;
    r.lm += losses.lm * scale;
    r.mtp += losses.mtp * scale;
    r.balance += losses.balance * scale;
    r.z += losses.z * scale;
  }
  if (observe_fp8) r.fp8_stats = ops::fp8::take_stats();
  if (test_spike_.step == r.step) test_spike_.fired = true;
  const bool fingerprint = t.spike_action == "rerun";
  uint64_t local = 0;
  if (fingerprint) {
    for (double v : {r.loss, r.lm, r.mtp, r.balance, r.z}) local = mix64(local, std::bit_cast<uint64_t>(v));
  }
  {
    // A signal is acted on when every rank knows of it: it travels with the step scalars, so all
    // ranks stop after the same step (a rank stopping alone would leave the others in a collective).
    torch::Tensor scalars = torch::tensor({r.loss, r.lm, r.mtp, r.balance, r.z, g_signal != 0 ? 1.0 : 0.0}, torch::kDouble);
    {
      RECORD_FUNCTION("latentmoe.comm.finish_gradients", c10::ArrayRef<const c10::IValue>{});
      parallel_->finish_gradients(scalars, balancer_->counts());  // sums over the ranks, then / world
    }
    r.stop_requested = scalars[5].item<double>() > 0;
    r.loss = scalars[0].item<double>(), r.lm = scalars[1].item<double>(), r.mtp = scalars[2].item<double>();
    r.balance = scalars[3].item<double>(), r.z = scalars[4].item<double>();
  }
  if (env_int("LATENTMOE_TEST_NAN_AT_STEP", -1) == r.step) r.loss = std::nan("");  // test hook
  RECORD_FUNCTION("latentmoe.optimizer.grad_norm", c10::ArrayRef<const c10::IValue>{});
  const double norm_sq = parallel_->grad_norm_squared(*model_, [](const torch::Tensor& g) {
    return squared_norm_cpu_applies(g) ? squared_norm_cpu(g) : g.to(torch::kDouble).pow(2).sum().item<double>();
  });
  r.grad_norm = std::sqrt(norm_sq);
  if (fingerprint) {
    local = mix64(local, parallel_->local_gradient_fingerprint(*model_, [](const torch::Tensor& g, uint64_t seed) {
      return tensor_fingerprint(g, seed);
    }));
    uint64_t reduced = 0;
    for (double v : {r.loss, r.lm, r.mtp, r.balance, r.z, r.grad_norm}) reduced = mix64(reduced, std::bit_cast<uint64_t>(v));
    fingerprint_ = {.local = local, .reduced = reduced};
  }
  return r;
}

bool Trainer::logged_step(int64_t step) const {
  return step % cfg_.logging.interval == 0 || step == 1 || step == batches_->total_steps();
}

void Trainer::log_step(const StepRecord& r, const std::vector<LayerLoadStats>& loads, double seconds) {
  const double tokens_per_s = static_cast<double>(r.global_batch * cfg_.train.seq_len) / seconds;
  const double tflops = tokens_per_s * train_flops_per_token_ / 1e12;
  std::map<std::string, double> scalars{{"loss/total", r.loss}, {"loss/lm", r.lm}, {"loss/mtp", r.mtp},
                                        {"loss/balance", r.balance}, {"loss/z", r.z}, {"grad_norm", r.grad_norm},
                                        {"lr", r.lr}, {"tokens_per_s", tokens_per_s}, {"step_time_s", seconds},
                                        {"tflops", tflops}, {"tokens_seen", static_cast<double>(tokens_seen_)},
                                        {"global_batch", static_cast<double>(r.global_batch)},
                                        {"mtp_lambda", r.mtp_weight}, {"bias_update_speed", r.bias_update_speed}};
  if (cfg_.logging.peak_tflops > 0) scalars["mfu"] = tflops / cfg_.logging.peak_tflops;
  parallel_->add_traffic(scalars);
  for (size_t l = 0; l < loads.size(); ++l) {
    scalars[fmt::format("moe/layer{}/max_violation", l)] = loads[l].max_violation;
    scalars[fmt::format("moe/layer{}/bias_range", l)] = loads[l].bias_max - loads[l].bias_min;
  }
  scalars.insert(r.fp8_stats.begin(), r.fp8_stats.end());
  metrics_->log(r.step, scalars);
  const int64_t total = batches_->total_steps();
  // A run sized in tokens reports its progress and ETA in tokens (the step count is derived).
  const bool by_tokens = batches_->sized_by_tokens();
  const double remaining = std::max(0.0, by_tokens ? static_cast<double>(cfg_.train.tokens - tokens_seen_) / tokens_per_s
                                                  : seconds * static_cast<double>(total - r.step));
  const std::string progress = by_tokens ? fmt::format("tokens {}/{} (step {}/{}, batch {})", tokens_seen_,
                                                       cfg_.train.tokens, r.step, total, r.global_batch)
                                         : fmt::format("step {}/{}", r.step, total);
  const std::string line = fmt::format("{} loss {:.4f} (lm {:.4f} mtp {:.4f}) gnorm {:.3f} lr {:.2e} {:.0f} tok/s {:.3f} TFLOP/s ETA {}",
                                       progress, r.loss, r.lm, r.mtp, r.grad_norm, r.lr, tokens_per_s, tflops,
                                       human_duration(remaining));
  if (rank_ != 0) return;
  if (::isatty(STDERR_FILENO)) {
    const double fraction = by_tokens ? static_cast<double>(tokens_seen_) / static_cast<double>(cfg_.train.tokens)
                                      : static_cast<double>(r.step) / static_cast<double>(std::max<int64_t>(total, 1));
    const int width = 20, done = std::clamp(static_cast<int>(width * fraction), 0, width);
    std::fprintf(stderr, "\r[%s%s] %s   ", std::string(static_cast<size_t>(done), '#').c_str(),
                 std::string(static_cast<size_t>(width - done), '.').c_str(), line.c_str());
    if (r.step == total) std::fprintf(stderr, "\n");
  } else if (logged_step(r.step)) {
    LMOE_INFO("{}", line);
  }
}

int Trainer::run() {
  const auto& t = cfg_.train;
  g_signal = 0;
  auto previous_term = std::signal(SIGTERM, on_signal);
  auto previous_int = std::signal(SIGINT, on_signal);
  struct RestoreSignals {
    decltype(previous_term) term, intr;
    ~RestoreSignals() {
      std::signal(SIGTERM, term);
      std::signal(SIGINT, intr);
    }
  } restore{previous_term, previous_int};
  const int64_t total_steps = batches_->total_steps();
  // A run sized in tokens ends on its tokens, even if a resume changed the batch and with it the
  // planned step count (that resume is warned about).
  const auto complete = [&] { return batches_->sized_by_tokens() ? tokens_seen_ >= t.tokens : step_ >= t.steps; };
  if (complete()) {
    LMOE_INFO("'{}' is already trained to step {} of {} ({} tokens): nothing to do", cfg_.name, step_, total_steps,
              tokens_seen_);
    return kExitOk;
  }
  const std::string sizing = batches_->sized_by_tokens() ? fmt::format(" (train.tokens={})", t.tokens) : "";
  const std::string ramp = t.batch_ramp.start > 0
                               ? fmt::format(" after a ramp from {} (+{} over {} tokens)", t.batch_ramp.start,
                                             t.batch_ramp.increment, t.batch_ramp.tokens)
                               : "";
  LMOE_INFO("training '{}': {} steps, {} tokens{}, of up to {} sequences{} x {} tokens ({} ranks x {} micro-batches "
            "of {}), {} threads, {}",
            cfg_.name, total_steps, batches_->total_tokens(), sizing, t.global_batch_size, ramp, t.seq_len, world_,
            accum_steps(t.global_batch_size), t.micro_batch_size, at::get_num_threads(), cfg_.precision.compute_dtype);
  LMOE_INFO("cpu runtime: {}; malloc: {}", openmp_settings(), allocator_name());
  const auto run_start = std::chrono::steady_clock::now();
  const int64_t first_tokens = tokens_seen_;
  const int64_t first_step = step_;
  while (!complete()) {
    const auto start = std::chrono::steady_clock::now();
    if (profiler_) profiler_->before_step(step_ + 1, first_step);
    StepRecord r = train_step();
    const bool finite = std::isfinite(r.loss) && std::isfinite(r.grad_norm);
    double z = 0, mean = 0;
    const bool spike = finite && is_spike(r, &z, &mean);
    if ((!finite || spike) && t.spike_action == "rerun") {
      if (const int code = rerun_diagnosis(r, finite ? "loss spike" : "non-finite step"); code != 0) return code;
    }
    if (!finite) {
      LMOE_ERROR("non-finite {} at step {} (loss {}, lm {}, mtp {}, balance {}, z {}, grad norm {}): stopped before the "
                 "optimizer update; parameters are unchanged. Lower optimizer.lr or check the data; resume from {}",
                 std::isfinite(r.loss) ? "gradient norm" : "loss", r.step, r.loss, r.lm, r.mtp, r.balance, r.z,
                 r.grad_norm, last_checkpoint_.value_or("scratch"));
      optimizer_->zero_grad();
      metrics_->flush();
      return kExitNonFinite;
    }
    if (spike && t.spike_action == "stop") {
      LMOE_ERROR("loss spike at step {}: {:.4f} (train.spike_action=stop); stopped before the update, parameters are "
                 "unchanged; its samples: {}. Resume from {} (with train.spike_action=skip to step over it)",
                 r.step, r.loss, describe_step_samples(), last_checkpoint_.value_or("scratch"));
      optimizer_->zero_grad();
      metrics_->flush();
      return kExitSpikeStopped;
    }
    if (spike) {
      LMOE_WARN("loss spike at step {}: {:.4f} is {:.1f} std above the mean {:.4f} of the last {} steps; update skipped",
                r.step, r.loss, z, mean, loss_window_.size());
      r.skipped = true;
      ++spikes_skipped_;
    }
    std::vector<LayerLoadStats> loads;
    if (!r.skipped) {
      const bool clip = t.grad_clip_norm > 0 && r.grad_norm > t.grad_clip_norm;
      {
        RECORD_FUNCTION("latentmoe.optimizer", c10::ArrayRef<const c10::IValue>{});
        optimizer_->step(r.lr, clip ? t.grad_clip_norm / (r.grad_norm + 1e-6) : 1.0);
      }
      {
        RECORD_FUNCTION("latentmoe.comm.gather_parameters", c10::ArrayRef<const c10::IValue>{});
        parallel_->after_update();
      }
      apply_test_faults_after_update();
      loads = balancer_->step(tokens_seen_);
      loss_window_.push_back(r.loss);
      if (static_cast<int64_t>(loss_window_.size()) > t.spike_window) loss_window_.erase(loss_window_.begin());
    } else {
      balancer_->counts().zero_();
    }
    ++step_;
    tokens_seen_ += r.global_batch * t.seq_len;
    consumed_samples_ += r.global_batch;
    r.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    for (const LayerLoadStats& l : loads) {
      r.expert_load.push_back(l.load);
      r.max_violation = std::max(r.max_violation, l.max_violation);
    }
    if (profiler_) profiler_->after_step(step_);
    history_.push_back(r);
    log_step(r, loads, r.seconds);
    const size_t experts = static_cast<size_t>(cfg_.model.n_routed_experts);
    for (size_t l = 0; l < loads.size(); ++l) {
      for (size_t e = 0; e < experts; ++e) {
        int64_t& idle = idle_steps_[l * experts + e];
        idle = loads[l].load[e] == 0 ? idle + 1 : 0;
        if (t.collapse_warn_steps > 0 && idle == t.collapse_warn_steps) {
          LMOE_WARN("router collapse in {}: expert {} has received no tokens for {} steps (train.collapse_warn_steps)",
                    moe_layer_names_[l], e, idle);
        }
      }
    }
    const bool last = complete();
    if (valid_data_ && ((t.eval_interval > 0 && step_ % t.eval_interval == 0) || last)) {
      const double loss = evaluate();
      last_valid_loss_ = loss;
      metrics_->log(step_, {{"valid/loss", loss}, {"valid/perplexity", std::exp(loss)}});
      LMOE_INFO("step {}: validation loss {:.4f} (perplexity {:.2f})", step_, loss, std::exp(loss));
    }
    metrics_->flush();
    const bool saving = (cfg_.checkpoint.interval > 0 && step_ % cfg_.checkpoint.interval == 0) || last;
    if (env_int("LATENTMOE_TEST_STOP_AFTER_STEP", -1) == step_) {  // test hook: as if signalled (on every rank)
      g_signal = SIGTERM;
      r.stop_requested = true;
    }
    // Every rank takes the same decision (stop_requested was reduced), so all enter the check.
    const bool stopping = parallel_->decision(r.stop_requested, g_signal != 0);
    // Before any checkpoint can capture a divergence.
    if (t.replica_check_interval > 0 && (step_ % t.replica_check_interval == 0 || saving || stopping)) {
      if (const int code = check_replicas(); code != 0) return code;
    }
    if (saving) save_checkpoint();
    if (stopping) {
      LMOE_WARN("received signal {} at step {}: saving and exiting with code {}",
                g_signal != 0 ? std::to_string(g_signal.load()) : std::string("(on another rank)"), step_,
                static_cast<int>(kExitInterrupted));
      if (!saving) save_checkpoint();
      return kExitInterrupted;
    }
  }
  const double wall = std::chrono::duration<double>(std::chrono::steady_clock::now() - run_start).count();
  LMOE_INFO("trained '{}' to step {} and {} tokens{} ({} tokens this run in {})", cfg_.name, step_, tokens_seen_,
            batches_->sized_by_tokens() ? fmt::format(" of train.tokens={}", t.tokens) : "", tokens_seen_ - first_tokens,
            human_duration(wall));
  return kExitOk;
}

double Trainer::evaluate() {
  if (!valid_data_) throw ConfigError("evaluation needs data.valid_fraction > 0 and train.eval_batches > 0");
  torch::NoGradGuard no_grad;
  model_->eval();
  const auto& t = cfg_.train;
  double total = 0;
  for (int64_t b = 0; b < t.eval_batches; ++b) {
    const data::Batch batch = valid_data_->rank_batch(b * t.micro_batch_size, t.micro_batch_size, 0, 1);
    const torch::Tensor tokens = to_tensor(batch);
    AutocastScope autocast(bf16_, c10::DeviceType::CPU);
    const model::ModelOutput out =
        model_(tokens.narrow(1, 0, t.seq_len), /*with_mtp=*/false, /*caches=*/nullptr, /*compute_logits=*/false);
    total += head_cross_entropy(out.head_input, head_weight_for_compute(out.head_weight), tokens.narrow(1, 1, t.seq_len))
                 .item<double>();
  }
  model_->train();
  return total / static_cast<double>(t.eval_batches);
}

double Trainer::unigram_entropy() const {
  std::vector<double> counts(static_cast<size_t>(cfg_.model.vocab_size), 0.0);
  double total = 0;
  std::vector<int32_t> ids;
  for (const auto& prefix : data_paths_) {
    const data::IndexedDataset d(prefix);
    const auto& docs = d.document_indices();
    for (int64_t doc = 0; doc + 1 < static_cast<int64_t>(docs.size()); ++doc) {
      if (data::is_validation_document(doc, cfg_.data.valid_fraction)) continue;
      for (int64_t s = docs[doc]; s < docs[doc + 1]; ++s) {
        ids.clear();
        d.read(s, 0, d.sequence_length(s), ids);
        for (int32_t id : ids) counts[static_cast<size_t>(id)] += 1;
        total += static_cast<double>(ids.size());
      }
    }
  }
  double h = 0;
  for (double c : counts) {
    if (c > 0) h -= (c / total) * std::log(c / total);
  }
  return h;
}

}  // namespace latentmoe::train
