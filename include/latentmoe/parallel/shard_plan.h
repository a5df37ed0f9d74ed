// What one rank of a layout holds — its parameters, gradients, AdamW moments and data-parallel
// gradient buckets — computed from the model built on the meta device (no memory), so it works
// for DeepSeek-V3 at 2,048 ranks on a laptop: `latentmoe config --world-size W --rank R --shard`.
// The figures are the tensors a real run of that rank allocates (tests/python/test_distributed.py
// compares them with the trainer's own count); the planner (issue 14) builds on them.
#pragma once

#include <cstdint>
#include <string>

#include "latentmoe/config/config.h"

namespace latentmoe::parallel {

struct RankShard {
  int world_size = 1, rank = 0, ep = 1, edp = 1;
  bool zero1 = false;
  int64_t first_expert = 0, experts_held = 0;  // routed experts of each MoE layer held here
  int64_t model_parameters = 0;                // the whole model's, MTP included
  int64_t parameters = 0;                      // held here (= gradient elements)
  int64_t expert_parameters = 0;               // of which routed experts
  int64_t moment_elements = 0;                 // AdamW exp_avg + exp_avg_sq kept here
  int64_t bucket_elements = 0;                 // gradient buckets (padded) and ZeRO-1 chunks, fp32
  int64_t parameter_bytes = 0, gradient_bytes = 0, moment_bytes = 0, bucket_bytes = 0;
  int64_t total_bytes() const { return parameter_bytes + gradient_bytes + moment_bytes + bucket_bytes; }
};

// Throws ConfigError naming parallel.ep / the world size when the layout does not divide, and the
// rank when it is outside [0, world_size).
RankShard plan_rank_shard(const config::Config& cfg, int world_size, int rank);
std::string format_rank_shard(const RankShard& shard);

}  // namespace latentmoe::parallel
