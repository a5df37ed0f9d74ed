// Pre-norm decoder block: x + attn(norm(x)), then + ffn(norm(x)); the attention is the registered
// model.attention.type, the FFN is dense SwiGLU for the first first_k_dense_replace layers and
// the registered model.ffn.type MoE layer after (when experts are configured).
#pragma once

#include <optional>

#include <torch/nn/module.h>
#include <torch/nn/pimpl.h>

#include "latentmoe/config/config.h"
#include "latentmoe/model/attention.h"
#include "latentmoe/model/mlp.h"
#include "latentmoe/model/moe.h"
#include "latentmoe/model/recompute.h"
#include "latentmoe/model/rms_norm.h"

namespace latentmoe::model {

struct BlockOutput {
  torch::Tensor hidden;
  std::optional<RouterOutput> routing;  // set for MoE blocks
};

// Whether block `layer_index` (MTP blocks continue the numbering) uses MoE.
bool is_moe_layer(const config::ModelConfig& cfg, int64_t layer_index);

class DecoderBlockImpl : public torch::nn::Module {
 public:
  // experts: the routed experts this rank holds (expert parallelism), by global index.
  DecoderBlockImpl(const config::ModelConfig& cfg, int64_t layer_index, const ExpertShard& experts = {});
  BlockOutput forward(const torch::Tensor& x, const torch::Tensor& positions, AttentionCache* cache = nullptr);
  // train.recompute for this block and its modules (none: everything kept for the backward).
  void set_recompute(Recompute mode);

  int64_t layer_index;
  RMSNorm input_layernorm{nullptr};
  Attention self_attn{nullptr};  // the model.attention.type layer
  RMSNorm post_attention_layernorm{nullptr};
  MLP dense_mlp{nullptr};  // registered as "mlp" when dense
  MoE moe{nullptr};        // the model.ffn.type layer, registered as "mlp" when MoE

 private:
  BlockOutput forward_layers(const torch::Tensor& x, const torch::Tensor& positions, AttentionCache* cache);
  Recompute recompute_ = Recompute::none;
};
TORCH_MODULE(DecoderBlock);

}  // namespace latentmoe::model
