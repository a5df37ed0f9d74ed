// RMSNorm: y = weight * x / sqrt(mean(x^2) + eps), computed in fp32 and cast back (as HF).
#pragma once

#include <torch/nn/module.h>
#include <torch/nn/pimpl.h>

#include "latentmoe/model/init.h"
#include <torch/types.h>

namespace latentmoe::model {

struct RMSNormOptions {
  RMSNormOptions(int64_t dim) : dim_(dim) {}  // NOLINT(google-explicit-constructor)
  TORCH_ARG(int64_t, dim);
  TORCH_ARG(double, eps) = 1e-6;
};

class RMSNormImpl : public torch::nn::Module, public ParameterInit {
 public:
  explicit RMSNormImpl(const RMSNormOptions& options);
  // Weight 1.
  void reset_own_parameters(double, const ParameterRng&) override;
  torch::Tensor forward(const torch::Tensor& x);

  RMSNormOptions options;
  torch::Tensor weight;  // [dim], init 1
};
TORCH_MODULE(RMSNorm);

}  // namespace latentmoe::model
