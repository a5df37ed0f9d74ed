// SwiGLU feed-forward: down(silu(gate(x)) * up(x)). Dense layers, each expert, shared experts.
#pragma once

#include <torch/nn/module.h>
#include <torch/nn/pimpl.h>

#include "latentmoe/model/linear.h"

namespace latentmoe::model {

struct MLPOptions {
  MLPOptions(int64_t hidden_size, int64_t intermediate_size)
      : hidden_size_(hidden_size), intermediate_size_(intermediate_size) {}
  TORCH_ARG(int64_t, hidden_size);
  TORCH_ARG(int64_t, intermediate_size);
};

class MLPImpl : public torch::nn::Module {
 public:
  explicit MLPImpl(const MLPOptions& options);
  torch::Tensor forward(const torch::Tensor& x);

  MLPOptions options;
  // train.recompute=selective: gate/up GEMMs and SwiGLU rerun in the backward (only x is kept).
  bool recompute_activation = false;
  Linear gate_proj{nullptr};  // [intermediate, hidden]
  Linear up_proj{nullptr};    // [intermediate, hidden]
  Linear down_proj{nullptr};  // [hidden, intermediate]
};
TORCH_MODULE(MLP);

}  // namespace latentmoe::model
