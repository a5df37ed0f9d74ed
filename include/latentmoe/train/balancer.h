// Auxiliary-loss-free load balancing, exactly as DeepSeek-V3: once per optimizer step, after all
// micro-batches, from the token counts of the whole global batch, b += gamma * sign(mean - load)
// per MoE layer; frozen after a token budget. Counts are added per forward (so recomputation
// would never count twice) and the distributed trainer only has to all-reduce counts() first.
#pragma once

#include <torch/types.h>

#include <string>
#include <vector>

namespace latentmoe::train {

struct LayerLoadStats {
  double max_violation = 0;  // (max load - mean) / mean
  double bias_min = 0, bias_max = 0;
  std::vector<int64_t> load;  // tokens per expert in this step
};

class ExpertBalancer {
 public:
  // biases: each MoE layer's e_score_correction_bias buffer (updated in place).
  ExpertBalancer(std::vector<torch::Tensor> biases, double gamma, int64_t freeze_after_tokens);

  void add_counts(size_t layer, const torch::Tensor& expert_counts);
  // The accumulated counts [layers, experts] (int64), e.g. for an all-reduce.
  torch::Tensor& counts() { return counts_; }
  // Applies the rule from the accumulated counts, returns per-layer stats and resets the counts.
  // tokens_seen: tokens trained on before this step (the freeze compares against it).
  std::vector<LayerLoadStats> step(int64_t tokens_seen);
  size_t layers() const { return biases_.size(); }

 private:
  std::vector<torch::Tensor> biases_;
  double gamma_;
  int64_t freeze_after_tokens_;
  torch::Tensor counts_;
};

}  // namespace latentmoe::train
