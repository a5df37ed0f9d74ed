// Decoder block; the FFN submodule is registered as "mlp" either way, so parameter names equal
// the HF checkpoint keys.
#include "latentmoe/model/decoder_block.h"

#include "latentmoe/model/layer_registry.h"

namespace latentmoe::model {

bool is_moe_layer(const config::ModelConfig& cfg, int64_t layer_index) {
  return cfg.n_routed_experts > 0 && layer_index >= cfg.first_k_dense_replace;
}

DecoderBlockImpl::DecoderBlockImpl(const config::ModelConfig& cfg, int64_t layer_index_, const ExpertShard& experts)
    : layer_index(layer_index_) {
  input_layernorm = register_module("input_layernorm", RMSNorm(RMSNormOptions(cfg.hidden_size).eps(cfg.rms_norm_eps)));
  self_attn = register_module("self_attn", Attention(make_attention(cfg, layer_index)));
  post_attention_layernorm =
      register_module("post_attention_layernorm", RMSNorm(RMSNormOptions(cfg.hidden_size).eps(cfg.rms_norm_eps)));
  if (is_moe_layer(cfg, layer_index)) {
    moe = register_module("mlp", MoE(make_ffn(cfg, {.layer_index = layer_index, .experts = experts})));
  } else {
    dense_mlp = register_module("mlp", MLP(MLPOptions(cfg.hidden_size, cfg.intermediate_size)));
  }
}

void DecoderBlockImpl::set_recompute(Recompute mode) {
  recompute_ = mode;
  const bool selective = mode == Recompute::selective;
  if (dense_mlp) dense_mlp->recompute_activation = selective;
  if (moe) moe->set_selective_recompute(selective);
}

BlockOutput DecoderBlockImpl::forward(const torch::Tensor& x, const torch::Tensor& positions, AttentionCache* cache) {
  if (cache || !recompute_active(recompute_ == Recompute::full, is_training())) return forward_layers(x, positions, cache);
  // The whole block reruns in the backward; the routing returned here is the forward's own.
  const Region block = [this](const torch::autograd::variable_list& in) -> torch::autograd::variable_list {
    BlockOutput b = forward_layers(in[0], in[1], nullptr);
    if (!b.routing) return {b.hidden};
    const RouterOutput& r = *b.routing;
    return {b.hidden, r.expert_ids, r.gate_weights, r.expert_counts, r.token_scores, r.logits};
  };
  const torch::autograd::variable_list out = recomputed(block, {x, positions});
  if (out.size() == 1) return {out[0], std::nullopt};
  return {out[0], RouterOutput{.expert_ids = out[1], .gate_weights = out[2], .expert_counts = out[3],
                               .token_scores = out[4], .logits = out[5]}};
}

BlockOutput DecoderBlockImpl::forward_layers(const torch::Tensor& x, const torch::Tensor& positions,
                                             AttentionCache* cache) {
  torch::Tensor attention;
  if (!cache && recompute_active(recompute_ == Recompute::selective, is_training())) {
    const Region core = [this](const torch::autograd::variable_list& in) -> torch::autograd::variable_list {
      return {self_attn->attention_core(input_layernorm(in[0]), in[1])};
    };
    attention = self_attn->output_projection(recomputed(core, {x, positions})[0]);
  } else {
    attention = self_attn(input_layernorm(x), positions, cache);
  }
  const torch::Tensor h = x + attention;
  const torch::Tensor normed = post_attention_layernorm(h);
  if (moe) {
    MoEOutput m = moe(normed);
    return {h + m.hidden, std::move(m.routing)};
  }
  return {h + dense_mlp(normed), std::nullopt};
}

}  // namespace latentmoe::model
