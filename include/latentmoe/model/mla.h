// Multi-head Latent Attention (DeepSeek-V2/V3): optional low-rank query compression, a shared
// low-rank key/value latent with its own norm, decoupled RoPE (per-head query rope slice and one
// rope key shared by all heads), causal attention with qk head dim != v head dim.
// Training runs the expanded form; generation runs the "absorbed" form over a cache holding only
// the normalized latent and the rotated rope key per token.
#pragma once

#include <torch/nn/module.h>
#include <torch/nn/pimpl.h>

#include "latentmoe/config/config.h"
#include "latentmoe/model/attention.h"
#include "latentmoe/model/attention_settings.h"
#include "latentmoe/model/linear.h"
#include "latentmoe/model/rms_norm.h"
#include "latentmoe/model/rotary.h"

namespace latentmoe::model {

// Per-layer generation cache: (kv_lora_rank + qk_rope_head_dim) values per token.
struct MultiHeadLatentAttentionOptions {
  // From the model section: hidden_size, num_attention_heads, attention_bias, rms_norm_eps, the
  // rotary keys, and model.attention's MLA keys.
  static MultiHeadLatentAttentionOptions from_config(const config::ModelConfig& cfg);
  TORCH_ARG(int64_t, hidden_size) = 0;
  TORCH_ARG(int64_t, heads) = 0;
  TORCH_ARG(MlaSettings, mla);
  TORCH_ARG(bool, bias) = false;
  TORCH_ARG(double, norm_eps) = 1e-6;
  TORCH_ARG(RotaryEmbedding, rotary);
};

struct LatentKVCache : AttentionCache {
  torch::Tensor latent;    // [batch, capacity, kv_lora_rank], normalized latent
  torch::Tensor rope_key;  // [batch, capacity, qk_rope_head_dim], already rotated

  void allocate(int64_t batch, int64_t capacity, int64_t kv_lora_rank, int64_t rope_dim,
                const torch::TensorOptions& options);
  int64_t capacity() const override { return latent.defined() ? latent.size(1) : 0; }
  int64_t bytes_per_token() const override;
};

class MultiHeadLatentAttentionImpl : public AttentionLayer {
 public:
  explicit MultiHeadLatentAttentionImpl(const MultiHeadLatentAttentionOptions& options);
  // mla and rotary refer into this object's own options.
  MultiHeadLatentAttentionImpl(const MultiHeadLatentAttentionImpl&) = delete;
  MultiHeadLatentAttentionImpl& operator=(const MultiHeadLatentAttentionImpl&) = delete;

  // The absorbed form runs over a LatentKVCache (make_cache); other caches are rejected.
  torch::Tensor forward(const torch::Tensor& x, const torch::Tensor& positions,
                        AttentionCache* cache = nullptr) override;
  torch::Tensor attention_core(const torch::Tensor& x, const torch::Tensor& positions) override;
  torch::Tensor output_projection(const torch::Tensor& attended) override;
  std::unique_ptr<AttentionCache> make_cache(int64_t batch, int64_t capacity,
                                             const torch::TensorOptions& options) const override;

  MultiHeadLatentAttentionOptions options;
  const MlaSettings& mla;  // options.mla()
  const RotaryEmbedding& rotary;  // options.rotary()
  double softmax_scale;
  Linear q_proj{nullptr};             // [heads*(nope+rope), hidden] when q_lora_rank is null
  Linear q_a_proj{nullptr};           // [q_lora_rank, hidden]
  RMSNorm q_a_layernorm{nullptr};                // [q_lora_rank]
  Linear q_b_proj{nullptr};           // [heads*(nope+rope), q_lora_rank]
  Linear kv_a_proj_with_mqa{nullptr};  // [kv_lora_rank + rope, hidden]
  RMSNorm kv_a_layernorm{nullptr};               // [kv_lora_rank]
  Linear kv_b_proj{nullptr};          // [heads*(nope+v), kv_lora_rank]
  Linear o_proj{nullptr};             // [hidden, heads*v]

 private:
  // q_nope [b,h,s,nope], q_rope [b,h,s,rope] (rotated), latent [b,s,r] (normed), k_rope [b,s,rope] (rotated)
  struct Projected {
    torch::Tensor q_nope, q_rope, latent, k_rope;
  };
  Projected project(const torch::Tensor& x, const torch::Tensor& positions);
  torch::Tensor attend_expanded(const Projected& p);
  torch::Tensor attend_absorbed(const Projected& p, LatentKVCache& cache);
};
TORCH_MODULE(MultiHeadLatentAttention);

}  // namespace latentmoe::model
