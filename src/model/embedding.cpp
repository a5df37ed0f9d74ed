#include "latentmoe/model/embedding.h"

namespace latentmoe::model {

TokenEmbeddingImpl::TokenEmbeddingImpl(int64_t vocab_size, int64_t dim) {
  weight = register_parameter("weight", torch::empty({vocab_size, dim}, parameter_options()));
}

void TokenEmbeddingImpl::reset_own_parameters(double init_std, const ParameterRng& rng) {
  torch::NoGradGuard no_grad;
  weight.normal_(0.0, init_std, rng("weight"));
}

torch::Tensor TokenEmbeddingImpl::forward(const torch::Tensor& ids) { return torch::embedding(weight, ids); }

}  // namespace latentmoe::model
