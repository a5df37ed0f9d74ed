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
  // ZeRO-1: for trainable parameter i (position among the trainable ones in named_params), keep
  // moments for and update only elements [ranges[i].first, +ranges[i].second) of its flattened
  // view (length 0: nothing); the other elements belong to other ranks.
  void restrict_to_ranges(const std::vector<std::pair<int64_t, int64_t>>& ranges);
  struct SlotView {
    const std::string& name;
    torch::Tensor param, exp_avg, exp_avg_sq;  // moments cover [begin, begin + length) only
    int64_t begin, length;
  };
  size_t size() const { return slots_.size(); }
  SlotView slot(size_t i) const;
  // One update with learning rate `lr` on every parameter that has a gradient, read as
  // gradient * grad_scale (gradient clipping's factor; the gradients themselves are not changed).
  // On an AVX-512 CPU the fp32 update runs as one fused pass per tensor (train/adamw_cpu.h).
  void step(double lr, double grad_scale = 1.0);
  void zero_grad();
  int64_t steps() const { return steps_; }
  bool decays(const std::string& name) const;

  // "exp_avg.<name>", "exp_avg_sq.<name>" (full shape) and "step" (a 1-element int64 tensor).
  // Under restrict_to_ranges the elements this rank does not own are zeros: the sum over the
  // ranks sharing a parameter is its full state.
  std::map<std::string, torch::Tensor> state() const;
  // Full-shape tensors by name (any extra names are ignored); a restricted slot takes its range.
  // Throws std::runtime_error naming a missing or mis-shaped tensor; loads nothing then.
  void load_state(const std::map<std::string, torch::Tensor>& state);

 private:
  torch::ScalarType moments_dtype() const;  // optimizer.moments_dtype
  struct Slot {
    std::string name;
    torch::Tensor param, exp_avg, exp_avg_sq;
    bool decay;
    int64_t begin = 0, length = 0;  // owned elements of the flattened parameter
  };
  std::vector<Slot> slots_;
  config::OptimizerConfig cfg_;
  int64_t steps_ = 0;
};

}  // namespace latentmoe::train
