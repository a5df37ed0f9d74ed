// RMSNorm in fp32 whatever the input dtype, so bf16 training matches the fp32 reference closely
// (one pass each way: latentmoe::rms_norm).
#include "latentmoe/model/rms_norm.h"

#include "latentmoe/ops/rms_norm.h"

namespace latentmoe::model {

RMSNormImpl::RMSNormImpl(const RMSNormOptions& options_) : options(options_) {
  weight = register_parameter("weight", torch::ones({options.dim()}, parameter_options()));
}

void RMSNormImpl::reset_own_parameters(double, const ParameterRng&) {
  torch::NoGradGuard no_grad;
  weight.fill_(1.0);
}

torch::Tensor RMSNormImpl::forward(const torch::Tensor& x) {
  return ops::rms_norm(x, weight, options.eps());
}

}  // namespace latentmoe::model
