// A training recipe: one or more stages, each a config, each after the first started from the
// previous stage's final checkpoint (`train --init-from`). What a stage may change in the model
// (the context extension), and the timeline of every schedule over the whole recipe (`latentmoe
// config --timeline`): phases with their token ranges, steps, batch, LR, MTP lambda, bias speed
// gamma, sequence length and rotary scaling. No torch headers.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "latentmoe/config/config.h"

namespace latentmoe::train {

// The model keys that differ between a checkpoint's model and a new stage's, besides the ones a
// stage may change (model.rope_scaling.*, model.max_position_embeddings): "key (a in the
// checkpoint, b in the config)".
std::vector<std::string> stage_incompatible_model_keys(const config::ModelConfig& from, const config::ModelConfig& to);

// One stretch of a stage in which nothing but the LR within a warmup/cosine and the batch within a
// ramp changes. Tokens are counted over the whole recipe; steps within the stage (0-based, end
// exclusive).
struct TimelinePhase {
  size_t stage = 0;
  std::string stage_name, what;
  int64_t first_token = 0, end_token = 0;
  int64_t first_step = 0, end_step = 0;
  int64_t batch_first = 0, batch_last = 0;  // global batch (sequences) of the first and last step
  double lr_first = 0, lr_last = 0;
  double mtp_lambda = 0, gamma = 0;
  int64_t seq_len = 0;
  std::string rotary;  // "plain" or "yarn x40 from 4096"
};

// The schedules at one step, for plotting.
struct TimelineSample {
  size_t stage = 0;
  int64_t tokens = 0;  // over the recipe, before the step
  double lr = 0, batch = 0, mtp_lambda = 0, gamma = 0, seq_len = 0;
};

struct Timeline {
  std::vector<std::string> stage_names;
  std::vector<int64_t> stage_steps, stage_tokens;
  std::vector<TimelinePhase> phases;
  std::vector<TimelineSample> samples;
};

// Throws ConfigError when a stage's model is not a context extension of the previous stage's.
Timeline build_timeline(const std::vector<config::Config>& stages);
// The table `config --timeline` prints (steps 1-based and inclusive there, as in the metrics).
std::string timeline_table(const Timeline& timeline);
// Phases and samples as JSON (tools/plot_timeline.py draws it).
std::string timeline_json(const Timeline& timeline);
// 14.8T, 14.633T, 469B, 62.915M, 12.3K: counts to 5 significant digits.
std::string human_count(double value);

}  // namespace latentmoe::train
