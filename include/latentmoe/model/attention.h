// The attention seam: what a decoder block needs from its attention layer, whatever the type
// (`model.attention.type`; layer_registry.h makes one). Generation talks to AttentionCache only.
#pragma once

#include <memory>

#include <torch/nn/module.h>
#include <torch/nn/pimpl.h>

namespace latentmoe::model {

// One layer's generation cache; each attention type stores what it needs per token.
class AttentionCache {
 public:
  virtual ~AttentionCache() = default;
  virtual int64_t capacity() const = 0;         // tokens it can hold
  virtual int64_t bytes_per_token() const = 0;  // what one more token of context costs
  int64_t length = 0;                           // tokens stored
};

class AttentionLayer : public torch::nn::Module {
 public:
  // x [batch, seq, hidden]; positions [seq] or [batch, seq]. Without a cache: causal attention
  // over x. With a cache (from make_cache): appends x's tokens and attends over all cached ones.
  virtual torch::Tensor forward(const torch::Tensor& x, const torch::Tensor& positions,
                                AttentionCache* cache = nullptr) = 0;
  // forward without a cache in two parts; the first is what train.recompute=selective reruns:
  // attention before the output projection -> [batch, heads, seq, head value dims], then the
  // output projection -> [batch, seq, hidden].
  virtual torch::Tensor attention_core(const torch::Tensor& x, const torch::Tensor& positions) = 0;
  virtual torch::Tensor output_projection(const torch::Tensor& attended) = 0;
  // An empty cache for `batch` sequences of up to `capacity` tokens, in `options`' dtype/device.
  virtual std::unique_ptr<AttentionCache> make_cache(int64_t batch, int64_t capacity,
                                                     const torch::TensorOptions& options) const = 0;
};
TORCH_MODULE_IMPL(Attention, AttentionLayer);

// Causal scaled-dot-product attention, [b,h,s,d] query/key and [b,h,s,dv] value (dv <= d). On the
// CPU from kPadValueFromSeq query positions the value heads are zero-padded to d so that torch's
// fused CPU kernel applies (MLA's dv < d keeps it on the slower math path), then cut back.
// grouped: key and value have fewer heads than the query, each serving a group of query heads
// (SDPA's enable_gqa; no copies of the key/value heads).
inline constexpr int64_t kPadValueFromSeq = 256;
torch::Tensor causal_attention(const torch::Tensor& query, const torch::Tensor& key, const torch::Tensor& value,
                               double scale, bool grouped = false);

// causal_attention under the CPU low-precision policy (ops/linear.h): where bf16 GEMMs are
// emulated, attention runs in fp32 on operands rounded as autocast would, and the result is cast.
torch::Tensor causal_attention_autocast(const torch::Tensor& query, const torch::Tensor& key,
                                        const torch::Tensor& value, double scale, bool grouped = false);

// Attention of `query` [b,h,s,d] at positions [start, start + s) over cached key [b,h/group,t,d]
// and value [b,h/group,t,dv] (t >= start + s): each query sees keys up to its own position, query
// heads [i·group, (i+1)·group) share key/value head i (grouped-query attention, without copying
// the cache out per head). fp32 softmax.
torch::Tensor cached_attention(const torch::Tensor& query, const torch::Tensor& key, const torch::Tensor& value,
                               int64_t start, double scale, int64_t group = 1);

}  // namespace latentmoe::model
