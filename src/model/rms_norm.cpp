// RMSNorm in fp32 whatever the input dtype, so bf16 training matches the fp32 reference closely.
#include "latentmoe/model/rms_norm.h"

namespace latentmoe::model {

RMSNormImpl::RMSNormImpl(const RMSNormOptions& options_) : options(options_) {
  weight = register_parameter("weight", torch::ones({options.dim()}));
}

torch::Tensor RMSNormImpl::forward(const torch::Tensor& x) {
  const torch::Tensor x32 = x.to(torch::kFloat);
  const torch::Tensor normed = x32 * torch::rsqrt(x32.pow(2).mean(-1, /*keepdim=*/true) + options.eps());
  return weight * normed.to(x.scalar_type());
}

}  // namespace latentmoe::model
