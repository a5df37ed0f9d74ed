// How big each step's global batch is and how long the run lasts: train.global_batch_size, or
// the batch ramp (train.batch_ramp) as a function of consumed tokens, and the run's length from
// train.steps or train.tokens. Closed form over the ramp's constant-batch segments, so a
// 14.8T-token plan costs microseconds. Everything the trainer, validation and the timeline need
// about batches comes from here. No torch headers.
#pragma once

#include <cstdint>
#include <vector>

#include "latentmoe/config/config.h"

namespace latentmoe::train {

class BatchSchedule {
 public:
  // Throws ConfigError for a ramp that cannot be planned (validate_config reports it first).
  explicit BatchSchedule(const config::TrainConfig& train);

  // Sequences in the step that starts after `tokens_seen` consumed tokens:
  // min(global, start + floor(tokens_seen * n / ramp.tokens) * increment) during the ramp, where
  // n = ceil((global - start) / increment) increments; global from ramp.tokens on.
  int64_t global_batch(int64_t tokens_seen) const;
  // Tokens consumed after `steps` steps (the sum of their batches x seq_len).
  int64_t tokens_after(int64_t steps) const;
  // Fewest steps after which at least `tokens` tokens are consumed.
  int64_t steps_to_reach(int64_t tokens) const;
  // The run: train.steps, or the first step count that reaches train.tokens.
  int64_t total_steps() const { return total_steps_; }
  int64_t total_tokens() const { return total_tokens_; }
  int64_t seq_len() const { return seq_len_; }
  bool sized_by_tokens() const { return sized_by_tokens_; }
  // Every global batch the run uses, in order (one value without a ramp); a ramp value that the
  // previous value's last step already went past is never used and is left out.
  std::vector<int64_t> batch_values() const;
  // Tokens at which the ramp reaches train.global_batch_size (0 without a ramp).
  int64_t ramp_end_tokens() const { return ramp_tokens_; }

 private:
  struct Segment {  // steps of one constant batch
    int64_t first_step, first_tokens, batch;
  };
  const Segment& segment_at_step(int64_t step) const;
  int64_t seq_len_, global_, ramp_tokens_ = 0;
  std::vector<Segment> segments_;  // the last one is open-ended (batch = global)
  int64_t start_ = 0, increment_ = 0, increments_ = 0;
  int64_t total_steps_ = 0, total_tokens_ = 0;
  bool sized_by_tokens_ = false;
};

}  // namespace latentmoe::train
