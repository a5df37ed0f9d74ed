// SwiGLU MLP with bias-free projections (DeepSeek layout and HF key names).
#include "latentmoe/model/mlp.h"

#include "latentmoe/model/recompute.h"
#include "latentmoe/ops/fp8_linear.h"
#include "latentmoe/ops/swiglu.h"

namespace latentmoe::model {

MLPImpl::MLPImpl(const MLPOptions& options_) : options(options_) {
  const auto linear = [](int64_t in, int64_t out) { return torch::nn::LinearOptions(in, out).bias(false); };
  gate_proj = register_module("gate_proj", Linear(linear(options.hidden_size(), options.intermediate_size())));
  up_proj = register_module("up_proj", Linear(linear(options.hidden_size(), options.intermediate_size())));
  down_proj = register_module("down_proj", Linear(linear(options.intermediate_size(), options.hidden_size())));
}

torch::Tensor MLPImpl::forward(const torch::Tensor& x) {
  // Under precision.fp8 (set on the projections) the SwiGLU keeps its input for the backward in e4m3.
  const auto activation_of = [this](const torch::Tensor& in) {
    const ops::fp8::Recipe& recipe = gate_proj->fp8;
    return recipe.enabled() ? ops::fp8::swiglu(gate_proj(in), up_proj(in), recipe) : ops::swiglu(gate_proj(in), up_proj(in));
  };
  if (!recompute_active(recompute_activation, is_training())) return down_proj(activation_of(x));
  const Region activation = [activation_of](const torch::autograd::variable_list& in) -> torch::autograd::variable_list {
    return {activation_of(in[0])};
  };
  return down_proj(recomputed(activation, {x})[0]);
}

}  // namespace latentmoe::model
