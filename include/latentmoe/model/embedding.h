// Token embedding with torch::nn::Embedding's parameter name ("weight"), allocated where the model
// is built (model/init.h: the meta device for shard planning) and initialized Normal(0, init_std)
// from its own stream.
#pragma once

#include <torch/nn/module.h>
#include <torch/nn/pimpl.h>

#include "latentmoe/model/init.h"

namespace latentmoe::model {

class TokenEmbeddingImpl : public torch::nn::Module, public ParameterInit {
 public:
  TokenEmbeddingImpl(int64_t vocab_size, int64_t dim);
  void reset_own_parameters(double init_std, const ParameterRng& rng) override;
  // ids [...] int64 -> [..., dim]
  torch::Tensor forward(const torch::Tensor& ids);

  torch::Tensor weight;  // [vocab, dim]
};
TORCH_MODULE(TokenEmbedding);

}  // namespace latentmoe::model
