// SwiGLU MLP with bias-free projections (DeepSeek layout and HF key names).
#include "latentmoe/model/mlp.h"

#include "latentmoe/model/recompute.h"
#include "latentmoe/ops/swiglu.h"

namespace latentmoe::model {

MLPImpl::MLPImpl(const MLPOptions& options_) : options(options_) {
  const auto linear = [](int64_t in, int64_t out) { return torch::nn::LinearOptions(in, out).bias(false); };
  gate_proj = register_module("gate_proj", Linear(linear(options.hidden_size(), options.intermediate_size())));
  up_proj = register_module("up_proj", Linear(linear(options.hidden_size(), options.intermediate_size())));
  down_proj = register_module("down_proj", Linear(linear(options.intermediate_size(), options.hidden_size())));
}

torch::Tensor MLPImpl::forward(const torch::Tensor& x) {
  if (!recompute_active(recompute_activation, is_training())) return down_proj(ops::swiglu(gate_proj(x), up_proj(x)));
  const Region activation = [this](const torch::autograd::variable_list& in) -> torch::autograd::variable_list {
    return {ops::swiglu(gate_proj(in[0]), up_proj(in[0]))};
  };
  return down_proj(recomputed(activation, {x})[0]);
}

}  // namespace latentmoe::model
