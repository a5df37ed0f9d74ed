// AdamW over fp32 master parameters with two parameter groups (decay / no decay: norms, biases
// and other 1-D tensors unless optimizer.decay_1d_params). Same update as torch.optim.AdamW.
// State (moments, step) is exported by name for checkpoints.
#pragma once

#include <torch/types.h>

#include <functional>
#include <map>
#include <string>
#include <vector>

#include "latentmoe/config/config.h"

namespace latentmoe::train {

class AdamW {
 public:
  AdamW(const std::vector<std::pair<std::string, torch::Tensor>>& named_params, const config::OptimizerConfig& cfg);
  // ZeRO-1: keep moments and update only for parameters with owned(index) true (index = position
  // in named_params among trainable ones); the others are left for their owner rank.
  void restrict_to(const std::function<bool(size_t)>& owned);
  bool owns(const std::string& name) const;
  // One update with learning rate `lr` on every parameter that has a gradient.
  void step(double lr);
  void zero_grad();
  int64_t steps() const { return steps_; }
  bool decays(const std::string& name) const;

  // "exp_avg.<name>", "exp_avg_sq.<name>" and "step" (a 1-element int64 tensor); under
  // restrict_to, the moments of parameters not owned are zeros (sum over ranks = full state).
  std::map<std::string, torch::Tensor> state() const;
  // Throws std::runtime_error naming a missing or mis-shaped tensor; loads nothing then.
  void load_state(const std::map<std::string, torch::Tensor>& state);

 private:
  struct Slot {
    std::string name;
    torch::Tensor param, exp_avg, exp_avg_sq;
    bool decay;
    bool owned = true;
  };
  std::vector<Slot> slots_;
  config::OptimizerConfig cfg_;
  int64_t steps_ = 0;
};

}  // namespace latentmoe::train
