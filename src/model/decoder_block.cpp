// Decoder block; the FFN submodule is registered as "mlp" either way, so parameter names equal
// the HF checkpoint keys.
#include "latentmoe/model/decoder_block.h"

namespace latentmoe::model {

bool is_moe_layer(const config::ModelConfig& cfg, int64_t layer_index) {
  return cfg.n_routed_experts > 0 && layer_index >= cfg.first_k_dense_replace;
}

DecoderBlockImpl::DecoderBlockImpl(const config::ModelConfig& cfg, int64_t layer_index_) : layer_index(layer_index_) {
  input_layernorm = register_module("input_layernorm", RMSNorm(RMSNormOptions(cfg.hidden_size).eps(cfg.rms_norm_eps)));
  self_attn = register_module("self_attn", MultiHeadLatentAttention(cfg));
  post_attention_layernorm =
      register_module("post_attention_layernorm", RMSNorm(RMSNormOptions(cfg.hidden_size).eps(cfg.rms_norm_eps)));
  if (is_moe_layer(cfg, layer_index)) {
    moe = register_module("mlp", MoE(cfg));
  } else {
    dense_mlp = register_module("mlp", MLP(MLPOptions(cfg.hidden_size, cfg.intermediate_size)));
  }
}

BlockOutput DecoderBlockImpl::forward(const torch::Tensor& x, const torch::Tensor& positions, LatentKVCache* cache) {
  const torch::Tensor h = x + self_attn(input_layernorm(x), positions, cache);
  const torch::Tensor normed = post_attention_layernorm(h);
  if (moe) {
    MoEOutput m = moe(normed);
    return {h + m.hidden, std::move(m.routing)};
  }
  return {h + dense_mlp(normed), std::nullopt};
}

}  // namespace latentmoe::model
