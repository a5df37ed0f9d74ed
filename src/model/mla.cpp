// MLA forward: the expanded form for training (keys/values materialized per head, SDPA), and the
// absorbed form for cached generation (kv_b_proj folded into the query and the output).
#include "latentmoe/model/mla.h"

#include "latentmoe/model/layer_registry.h"

#include <cmath>
#include <limits>

namespace latentmoe::model {

void LatentKVCache::allocate(int64_t batch, int64_t capacity, int64_t kv_lora_rank, int64_t rope_dim,
                             const torch::TensorOptions& options) {
  latent = torch::zeros({batch, capacity, kv_lora_rank}, options);
  rope_key = torch::zeros({batch, capacity, rope_dim}, options);
  length = 0;
}

MultiHeadLatentAttentionOptions MultiHeadLatentAttentionOptions::from_config(const config::ModelConfig& cfg) {
  const MlaSettings& mla = mla_settings(cfg);
  return MultiHeadLatentAttentionOptions()
      .hidden_size(cfg.hidden_size)
      .heads(cfg.num_attention_heads)
      .mla(mla)
      .bias(cfg.attention_bias)
      .norm_eps(cfg.rms_norm_eps)
      .rotary(RotaryEmbedding(cfg, mla.qk_rope_head_dim));
}

int64_t LatentKVCache::bytes_per_token() const {
  return (latent.size(-1) + rope_key.size(-1)) * static_cast<int64_t>(latent.element_size());
}

MultiHeadLatentAttentionImpl::MultiHeadLatentAttentionImpl(const MultiHeadLatentAttentionOptions& options_)
    : options(options_), mla(options.mla()), rotary(options.rotary()) {
  const int64_t heads = options.heads();
  const int64_t qk_dim = mla.qk_nope_head_dim + mla.qk_rope_head_dim;
  softmax_scale = std::pow(static_cast<double>(qk_dim), -0.5) * rotary.softmax_scale_multiplier();
  const auto linear = [](int64_t in, int64_t out, bool bias) { return torch::nn::LinearOptions(in, out).bias(bias); };
  if (mla.q_lora_rank) {
    const int64_t rank = *mla.q_lora_rank;
    q_a_proj = register_module("q_a_proj", Linear(linear(options.hidden_size(), rank, options.bias())));
    q_a_layernorm = register_module("q_a_layernorm", RMSNorm(RMSNormOptions(rank).eps(options.norm_eps())));
    q_b_proj = register_module("q_b_proj", Linear(linear(rank, heads * qk_dim, false)));
  } else {
    q_proj = register_module("q_proj", Linear(linear(options.hidden_size(), heads * qk_dim, false)));
  }
  kv_a_proj_with_mqa = register_module(
      "kv_a_proj_with_mqa",
      Linear(linear(options.hidden_size(), mla.kv_lora_rank + mla.qk_rope_head_dim, options.bias())));
  kv_a_layernorm = register_module("kv_a_layernorm", RMSNorm(RMSNormOptions(mla.kv_lora_rank).eps(options.norm_eps())));
  kv_b_proj = register_module(
      "kv_b_proj", Linear(linear(mla.kv_lora_rank, heads * (mla.qk_nope_head_dim + mla.v_head_dim), false)));
  o_proj = register_module("o_proj", Linear(linear(heads * mla.v_head_dim, options.hidden_size(), options.bias())));
}

MultiHeadLatentAttentionImpl::Projected MultiHeadLatentAttentionImpl::project(const torch::Tensor& x,
                                                                              const torch::Tensor& positions) {
  const int64_t batch = x.size(0), seq = x.size(1), heads = options.heads();
  const torch::Tensor q = mla.q_lora_rank ? q_b_proj(q_a_layernorm(q_a_proj(x))) : q_proj(x);
  const torch::Tensor q_heads = q.view({batch, seq, heads, -1}).transpose(1, 2);  // [b,h,s,nope+rope]
  const auto q_parts = q_heads.split({mla.qk_nope_head_dim, mla.qk_rope_head_dim}, -1);
  const auto kv_parts = kv_a_proj_with_mqa(x).split({mla.kv_lora_rank, mla.qk_rope_head_dim}, -1);
  auto [cos, sin] = rotary.cos_sin(positions);  // [s, rope/2] or [b, s, rope/2]
  return {q_parts[0], rotary.apply(q_parts[1], cos, sin), kv_a_layernorm(kv_parts[0]),
          rotary.apply(kv_parts[1], cos, sin)};
}

torch::Tensor MultiHeadLatentAttentionImpl::attend_expanded(const Projected& p) {
  const int64_t batch = p.latent.size(0), seq = p.latent.size(1), heads = options.heads();
  const auto kv = kv_b_proj(p.latent).view({batch, seq, heads, -1}).transpose(1, 2).split(
      {mla.qk_nope_head_dim, mla.v_head_dim}, -1);
  const torch::Tensor k_rope = p.k_rope.unsqueeze(1).expand({batch, heads, seq, mla.qk_rope_head_dim});
  const torch::Tensor query = torch::cat({p.q_nope, p.q_rope}, -1);
  const torch::Tensor key = torch::cat({kv[0], k_rope}, -1);
  return causal_attention_autocast(query, key, kv[1], softmax_scale);  // [b,h,s,v]
}

torch::Tensor MultiHeadLatentAttentionImpl::attend_absorbed(const Projected& p, LatentKVCache& cache) {
  const int64_t seq = p.latent.size(1), heads = options.heads();
  const int64_t start = cache.length, end = start + seq;
  TORCH_CHECK(end <= cache.latent.size(1), "LatentKVCache: ", end, " tokens exceed the cache capacity ",
              cache.latent.size(1));
  cache.latent.narrow(1, start, seq).copy_(p.latent);
  cache.rope_key.narrow(1, start, seq).copy_(p.k_rope);
  cache.length = end;
  const torch::Tensor latent = cache.latent.narrow(1, 0, end);   // [b,t,r]
  const torch::Tensor rope_key = cache.rope_key.narrow(1, 0, end);  // [b,t,rope]
  // kv_b_proj.weight [h*(nope+v), r] → per head [nope+v, r]: the key half folds into the query,
  // the value half is applied after attention, so keys/values are never expanded per head.
  const auto w = kv_b_proj->weight.view({heads, mla.qk_nope_head_dim + mla.v_head_dim, mla.kv_lora_rank})
                     .split({mla.qk_nope_head_dim, mla.v_head_dim}, 1);
  const torch::Tensor q_latent = torch::einsum("bhsd,hdr->bhsr", {p.q_nope, w[0]});
  torch::Tensor scores = torch::matmul(q_latent, latent.unsqueeze(1).transpose(-1, -2)) +
                         torch::matmul(p.q_rope, rope_key.unsqueeze(1).transpose(-1, -2));  // [b,h,s,t]
  scores = scores.to(torch::kFloat) * softmax_scale;
  const torch::Tensor query_pos = torch::arange(start, end, torch::TensorOptions(torch::kLong).device(scores.device()));
  const torch::Tensor key_pos = torch::arange(0, end, torch::TensorOptions(torch::kLong).device(scores.device()));
  scores = scores.masked_fill(key_pos.unsqueeze(0) > query_pos.unsqueeze(1), -std::numeric_limits<float>::infinity());
  const torch::Tensor probs = torch::softmax(scores, -1).to(latent.scalar_type());
  const torch::Tensor out_latent = torch::matmul(probs, latent.unsqueeze(1));  // [b,h,s,r]
  return torch::einsum("bhsr,hvr->bhsv", {out_latent, w[1]});
}

torch::Tensor MultiHeadLatentAttentionImpl::forward(const torch::Tensor& x, const torch::Tensor& positions,
                                                   AttentionCache* cache) {
  if (!cache) return output_projection(attention_core(x, positions));
  auto* latent_cache = dynamic_cast<LatentKVCache*>(cache);
  TORCH_CHECK(latent_cache, "MultiHeadLatentAttention: the cache was not made by this layer's make_cache");
  return output_projection(attend_absorbed(project(x, positions), *latent_cache));
}

std::unique_ptr<AttentionCache> MultiHeadLatentAttentionImpl::make_cache(
    int64_t batch, int64_t capacity, const torch::TensorOptions& tensor_options) const {
  auto cache = std::make_unique<LatentKVCache>();
  cache->allocate(batch, capacity, mla.kv_lora_rank, mla.qk_rope_head_dim, tensor_options);
  return cache;
}

torch::Tensor MultiHeadLatentAttentionImpl::attention_core(const torch::Tensor& x, const torch::Tensor& positions) {
  return attend_expanded(project(x, positions));
}

torch::Tensor MultiHeadLatentAttentionImpl::output_projection(const torch::Tensor& attended) {
  const int64_t batch = attended.size(0), seq = attended.size(2);
  return o_proj(attended.transpose(1, 2).reshape({batch, seq, -1}));
}

namespace {
const bool registered = register_attention(
    "mla", [](const config::ModelConfig& cfg, int64_t) -> std::shared_ptr<AttentionLayer> {
      return std::make_shared<MultiHeadLatentAttentionImpl>(MultiHeadLatentAttentionOptions::from_config(cfg));
    });
}  // namespace

}  // namespace latentmoe::model
