// Projection layer with torch::nn::Linear's parameters and names ("weight" [out, in], optional
// "bias" [out]), so HF keys and checkpoints are unchanged, and its forward through ops::linear:
// the low-precision GEMM policy (native or emulated bf16 on CPUs) in one place.
#pragma once

#include <torch/nn/module.h>
#include <torch/nn/options/linear.h>
#include <torch/nn/pimpl.h>

namespace latentmoe::model {

class LinearImpl : public torch::nn::Module {
 public:
  explicit LinearImpl(const torch::nn::LinearOptions& options);
  // x [..., in] -> [..., out]
  torch::Tensor forward(const torch::Tensor& x);

  torch::nn::LinearOptions options;
  torch::Tensor weight;  // [out, in]
  torch::Tensor bias;    // [out], undefined without options.bias()
};
TORCH_MODULE(Linear);

}  // namespace latentmoe::model
