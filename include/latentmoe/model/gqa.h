// Grouped-query attention (`model.attention.type: gqa`), the Llama/Qwen3 layout: q/k/v/o
// projections, num_key_value_heads key/value heads each shared by a group of query heads,
// optional per-head RMSNorm on queries and keys before RoPE (Qwen3), RoPE over the whole head.
// HF key names: self_attn.{q,k,v,o}_proj, self_attn.{q,k}_norm.
#pragma once

#include <torch/nn/module.h>
#include <torch/nn/pimpl.h>

#include "latentmoe/config/config.h"
#include "latentmoe/model/attention.h"
#include "latentmoe/model/linear.h"
#include "latentmoe/model/rms_norm.h"
#include "latentmoe/model/rotary.h"

namespace latentmoe::model {

struct GroupedQueryAttentionOptions {
  // Everything from the model section: model.hidden_size, num_attention_heads, attention_bias,
  // rms_norm_eps, the rotary keys, and model.attention's num_key_value_heads, head_dim, qk_norm.
  static GroupedQueryAttentionOptions from_config(const config::ModelConfig& cfg);
  TORCH_ARG(int64_t, hidden_size) = 0;
  TORCH_ARG(int64_t, heads) = 0;
  TORCH_ARG(int64_t, kv_heads) = 0;
  TORCH_ARG(int64_t, head_dim) = 0;
  TORCH_ARG(bool, qk_norm) = true;
  TORCH_ARG(bool, bias) = false;
  TORCH_ARG(double, norm_eps) = 1e-6;
  TORCH_ARG(RotaryEmbedding, rotary);
};

// Per-layer generation cache: 2 x num_key_value_heads x head_dim values per token.
struct KVCache : AttentionCache {
  torch::Tensor key;    // [batch, kv_heads, capacity, head_dim], rotated
  torch::Tensor value;  // [batch, kv_heads, capacity, head_dim]
  int64_t capacity() const override { return key.defined() ? key.size(2) : 0; }
  int64_t bytes_per_token() const override;
};

class GroupedQueryAttentionImpl : public AttentionLayer {
 public:
  explicit GroupedQueryAttentionImpl(const GroupedQueryAttentionOptions& options);

  torch::Tensor forward(const torch::Tensor& x, const torch::Tensor& positions,
                        AttentionCache* cache = nullptr) override;
  torch::Tensor attention_core(const torch::Tensor& x, const torch::Tensor& positions) override;
  torch::Tensor output_projection(const torch::Tensor& attended) override;
  std::unique_ptr<AttentionCache> make_cache(int64_t batch, int64_t capacity,
                                             const torch::TensorOptions& options) const override;

  GroupedQueryAttentionOptions options;
  Linear q_proj{nullptr};   // [heads*head_dim, hidden]
  Linear k_proj{nullptr};   // [kv_heads*head_dim, hidden]
  Linear v_proj{nullptr};   // [kv_heads*head_dim, hidden]
  Linear o_proj{nullptr};   // [hidden, heads*head_dim]
  RMSNorm q_norm{nullptr};  // [head_dim], when qk_norm
  RMSNorm k_norm{nullptr};  // [head_dim], when qk_norm

 private:
  struct Projected {
    torch::Tensor query;  // [b, heads, s, d], normed and rotated
    torch::Tensor key;    // [b, kv_heads, s, d], normed and rotated
    torch::Tensor value;  // [b, kv_heads, s, d]
  };
  Projected project(const torch::Tensor& x, const torch::Tensor& positions);
};
TORCH_MODULE(GroupedQueryAttention);

}  // namespace latentmoe::model
