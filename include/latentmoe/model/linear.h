// Projection layer with torch::nn::Linear's parameters and names ("weight" [out, in], optional
// "bias" [out]), so HF keys and checkpoints are unchanged, and its forward through ops::linear:
// the low-precision GEMM policy (native or emulated bf16 on CPUs) in one place.
#pragma once

#include <torch/nn/module.h>
#include <torch/nn/options/linear.h>
#include <torch/nn/pimpl.h>

#include <string>

#include "latentmoe/model/init.h"
#include "latentmoe/ops/fp8.h"

namespace latentmoe::model {

class LinearImpl : public torch::nn::Module, public ParameterInit {
 public:
  explicit LinearImpl(const torch::nn::LinearOptions& options);
  // Weight Normal(0, init_std), bias 0.
  void reset_own_parameters(double init_std, const ParameterRng& rng) override;
  // x [..., in] -> [..., out]
  torch::Tensor forward(const torch::Tensor& x);

  torch::nn::LinearOptions options;
  torch::Tensor weight;  // [out, in]
  torch::Tensor bias;    // [out], undefined without options.bias()
  // precision.fp8: set by the model on the projections DeepSeek-V3 runs in FP8 (ops/fp8_linear.h);
  // fp8_name names its statistics.
  ops::fp8::Recipe fp8;
  std::string fp8_name;
};
TORCH_MODULE(Linear);

}  // namespace latentmoe::model
