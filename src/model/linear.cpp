// Built alone, initialized as torch::nn::Linear (Kaiming-uniform weight, uniform bias); the model
// re-initializes every parameter with model.init_std anyway. On the meta device: shapes only.
#include "latentmoe/model/linear.h"

#include <torch/nn/init.h>

#include <cmath>

#include "latentmoe/ops/fp8_linear.h"
#include "latentmoe/ops/linear.h"

namespace latentmoe::model {

LinearImpl::LinearImpl(const torch::nn::LinearOptions& options_) : options(options_) {
  weight = register_parameter("weight", torch::empty({options.out_features(), options.in_features()}, parameter_options()));
  if (options.bias()) bias = register_parameter("bias", torch::empty({options.out_features()}, parameter_options()));
  if (weight.is_meta()) return;
  torch::nn::init::kaiming_uniform_(weight, std::sqrt(5.0));
  if (bias.defined()) {
    torch::NoGradGuard no_grad;
    const double bound = 1.0 / std::sqrt(static_cast<double>(std::max<int64_t>(options.in_features(), 1)));
    bias.uniform_(-bound, bound);
  }
}

void LinearImpl::reset_own_parameters(double init_std, const ParameterRng& rng) {
  torch::NoGradGuard no_grad;
  weight.normal_(0.0, init_std, rng("weight"));
  if (bias.defined()) bias.zero_();
}

torch::Tensor LinearImpl::forward(const torch::Tensor& x) {
  if (fp8.enabled()) return ops::fp8::linear(x, weight, bias, fp8, fp8_name);
  return ops::linear(x, weight, bias);  // an undefined bias is no bias
}

}  // namespace latentmoe::model
