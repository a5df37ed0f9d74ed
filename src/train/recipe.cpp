// Stage compatibility and the recipe timeline: boundaries of every schedule mapped to steps with
// the batch plan, one phase between consecutive boundaries.
#include "latentmoe/train/recipe.h"

#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <nlohmann/json.hpp>

#include "latentmoe/config/loader.h"
#include "latentmoe/train/batch_schedule.h"
#include "latentmoe/train/schedule.h"
#include "latentmoe/util/error.h"

namespace latentmoe::train {

using json = nlohmann::json;

std::vector<std::string> stage_incompatible_model_keys(const config::ModelConfig& from, const config::ModelConfig& to) {
  config::Config a, b;
  a.model = from;
  b.model = to;
  std::vector<std::string> differing;
  for (const auto& d : config::differing_keys(a, b)) {
    const bool context_extension = d.key == "model.max_position_embeddings" || d.key.starts_with("model.rope_scaling.");
    if (!context_extension) differing.push_back(fmt::format("{} ({} in the checkpoint, {} in the config)", d.key, d.from, d.to));
  }
  return differing;
}

std::string human_count(double value) {
  const double a = std::abs(value);
  const auto fmt4 = [](double v) { return fmt::format("{:.5g}", v); };
  if (a >= 1e12) return fmt4(value / 1e12) + "T";
  if (a >= 1e9) return fmt4(value / 1e9) + "B";
  if (a >= 1e6) return fmt4(value / 1e6) + "M";
  if (a >= 1e4) return fmt4(value / 1e3) + "K";
  return fmt::format("{}", static_cast<int64_t>(value));
}

namespace {
std::string rotary_of(const config::ModelConfig& m) {
  if (m.rope_scaling.type == "none") return "plain";
  return fmt::format("{} x{:g} from {}", m.rope_scaling.type, m.rope_scaling.factor,
                     m.rope_scaling.original_max_position_embeddings);
}

struct StagePlan {
  const config::Config& cfg;
  BatchSchedule batches;
  LrSchedule lr;
  explicit StagePlan(const config::Config& c)
      : cfg(c), batches(c.train), lr(c.schedule, c.optimizer.lr, batches) {}
  int64_t tokens(int64_t step) const { return batches.tokens_after(step); }
  double lr_at(int64_t step) const { return lr.lr(step, tokens(step)); }
  double lambda_at(int64_t step) const { return mtp_loss_weight_at(cfg, tokens(step)); }
  double gamma_at(int64_t step) const { return bias_update_speed_at(cfg.train, tokens(step)); }
  // A boundary in schedule.unit as a step index.
  int64_t schedule_step(int64_t at) const { return cfg.schedule.unit == "tokens" ? batches.steps_to_reach(at) : at; }

  std::vector<int64_t> boundaries() const {
    const auto& s = cfg.schedule;
    const auto& t = cfg.train;
    const int64_t total = batches.total_steps();
    std::vector<int64_t> b{0, total, s.warmup};
    if (batches.ramp_end_tokens() > 0) b.push_back(batches.steps_to_reach(batches.ramp_end_tokens()));
    if (s.type != "constant") {
      const int64_t start = s.type == "multiphase" && s.decay_start > 0 ? schedule_step(s.decay_start) : s.warmup;
      b.push_back(start);
      if (s.decay_length > 0) {
        b.push_back(s.type == "multiphase" && s.decay_start > 0 ? schedule_step(s.decay_start + s.decay_length)
                    : cfg.schedule.unit == "tokens" ? batches.steps_to_reach(tokens(s.warmup) + s.decay_length)
                                                    : s.warmup + s.decay_length);
      }
    }
    if (s.type == "multiphase") {
      for (const int64_t at : s.stepdown_at) b.push_back(schedule_step(at));
    }
    if (t.mtp_loss_weight_switch_tokens > 0) b.push_back(batches.steps_to_reach(t.mtp_loss_weight_switch_tokens));
    if (t.bias_update_freeze_tokens > 0) b.push_back(batches.steps_to_reach(t.bias_update_freeze_tokens));
    for (auto& x : b) x = std::clamp<int64_t>(x, 0, total);
    std::sort(b.begin(), b.end());
    b.erase(std::unique(b.begin(), b.end()), b.end());
    return b;
  }

  std::string describe(int64_t first, int64_t end) const {
    const auto& s = cfg.schedule;
    std::string lr_part;
    if (first < s.warmup) {
      lr_part = "LR warmup";
    } else if (s.type == "constant") {
      lr_part = "constant LR";
    } else {
      const double a = lr_at(first), z = lr_at(end - 1);
      if (a != z) {
        lr_part = "cosine decay";
      } else if (a == cfg.optimizer.lr) {
        lr_part = "constant LR";
      } else if (a == s.min_lr) {
        lr_part = "min LR";
      } else {
        lr_part = "stepped-down LR";
      }
    }
    if (batches.global_batch(tokens(first)) != batches.global_batch(tokens(end - 1))) lr_part += ", batch ramp";
    return lr_part;
  }
};
}  // namespace

Timeline build_timeline(const std::vector<config::Config>& stages) {
  if (stages.empty()) throw ConfigError("a recipe needs at least one stage config");
  Timeline out;
  int64_t offset = 0;
  for (size_t k = 0; k < stages.size(); ++k) {
    const config::Config& cfg = stages[k];
    if (k > 0) {
      if (const auto differing = stage_incompatible_model_keys(stages[k - 1].model, cfg.model); !differing.empty()) {
        std::string list;
        for (const auto& d : differing) list += "\n  " + d;
        throw ConfigError(fmt::format("stage {} '{}' cannot start from stage {} '{}': besides model.rope_scaling.* and "
                                      "model.max_position_embeddings, these model keys differ:{}",
                                      k + 1, cfg.name, k, stages[k - 1].name, list));
      }
    }
    const StagePlan plan(cfg);
    const int64_t total = plan.batches.total_steps();
    out.stage_names.push_back(cfg.name);
    out.stage_steps.push_back(total);
    out.stage_tokens.push_back(plan.batches.total_tokens());
    const std::vector<int64_t> b = plan.boundaries();
    for (size_t i = 0; i + 1 < b.size(); ++i) {
      const int64_t first = b[i], end = b[i + 1];
      TimelinePhase p;
      p.stage = k;
      p.stage_name = cfg.name;
      p.what = plan.describe(first, end);
      p.first_step = first;
      p.end_step = end;
      p.first_token = offset + plan.tokens(first);
      p.end_token = offset + plan.tokens(end);
      p.batch_first = plan.batches.global_batch(plan.tokens(first));
      p.batch_last = plan.batches.global_batch(plan.tokens(end - 1));
      p.lr_first = plan.lr_at(first);
      p.lr_last = plan.lr_at(end - 1);
      p.mtp_lambda = plan.lambda_at(first);
      p.gamma = plan.gamma_at(first);
      p.seq_len = cfg.train.seq_len;
      p.rotary = rotary_of(cfg.model);
      out.phases.push_back(p);
    }
    // ~500 evenly spaced steps per stage plus both ends of every phase (sharp edges in the plot).
    std::vector<int64_t> steps;
    for (int64_t i = 0; i < 500; ++i) steps.push_back(total * i / 500);
    for (size_t i = 0; i + 1 < b.size(); ++i) {
      steps.push_back(b[i]);
      steps.push_back(std::max(b[i], b[i + 1] - 1));
    }
    std::sort(steps.begin(), steps.end());
    steps.erase(std::unique(steps.begin(), steps.end()), steps.end());
    for (const int64_t s : steps) {
      if (s >= total) continue;
      out.samples.push_back({.stage = k, .tokens = offset + plan.tokens(s), .lr = plan.lr_at(s),
                             .batch = static_cast<double>(plan.batches.global_batch(plan.tokens(s))),
                             .mtp_lambda = plan.lambda_at(s), .gamma = plan.gamma_at(s),
                             .seq_len = static_cast<double>(cfg.train.seq_len)});
    }
    offset += plan.batches.total_tokens();
  }
  return out;
}

std::string timeline_table(const Timeline& t) {
  std::string out = fmt::format("{:<5} {:<30} {:>19} {:>17} {:>13} {:>19} {:>5} {:>6} {:>7} {}\n", "stage", "phase",
                                "tokens", "steps", "global batch", "LR", "MTP λ", "γ", "seq", "rotary");
  for (const TimelinePhase& p : t.phases) {
    const std::string tokens = fmt::format("{}–{}", human_count(static_cast<double>(p.first_token)),
                                           human_count(static_cast<double>(p.end_token)));
    const std::string steps = fmt::format("{}–{}", p.first_step + 1, p.end_step);  // as the metrics count them
    const std::string batch = p.batch_first == p.batch_last ? fmt::format("{}", p.batch_first)
                                                            : fmt::format("{}→{}", p.batch_first, p.batch_last);
    const std::string lr = p.lr_first == p.lr_last ? fmt::format("{:.3g}", p.lr_first)
                                                   : fmt::format("{:.3g}→{:.3g}", p.lr_first, p.lr_last);
    out += fmt::format("{:<5} {:<30} {:>19} {:>17} {:>13} {:>19} {:>5g} {:>6g} {:>7} {}\n", p.stage + 1, p.what, tokens,
                       steps, batch, lr, p.mtp_lambda, p.gamma, p.seq_len, p.rotary);
  }
  int64_t total = 0;
  for (size_t k = 0; k < t.stage_names.size(); ++k) {
    out += fmt::format("stage {} '{}': {} steps, {} tokens ({})\n", k + 1, t.stage_names[k], t.stage_steps[k],
                       human_count(static_cast<double>(t.stage_tokens[k])), t.stage_tokens[k]);
    total += t.stage_tokens[k];
  }
  out += fmt::format("recipe: {} tokens ({})\n", human_count(static_cast<double>(total)), total);
  return out;
}

std::string timeline_json(const Timeline& t) {
  json phases = json::array(), samples = json::array();
  for (const TimelinePhase& p : t.phases) {
    phases.push_back({{"stage", p.stage}, {"stage_name", p.stage_name}, {"what", p.what}, {"first_token", p.first_token},
                      {"end_token", p.end_token}, {"first_step", p.first_step}, {"end_step", p.end_step},
                      {"batch_first", p.batch_first}, {"batch_last", p.batch_last}, {"lr_first", p.lr_first},
                      {"lr_last", p.lr_last}, {"mtp_lambda", p.mtp_lambda}, {"gamma", p.gamma}, {"seq_len", p.seq_len},
                      {"rotary", p.rotary}});
  }
  for (const TimelineSample& s : t.samples) {
    samples.push_back({{"stage", s.stage}, {"tokens", s.tokens}, {"lr", s.lr}, {"batch", s.batch},
                       {"mtp_lambda", s.mtp_lambda}, {"gamma", s.gamma}, {"seq_len", s.seq_len}});
  }
  return json{{"stages", t.stage_names}, {"stage_steps", t.stage_steps}, {"stage_tokens", t.stage_tokens},
              {"phases", phases}, {"samples", samples}}
      .dump(1);
}

}  // namespace latentmoe::train
