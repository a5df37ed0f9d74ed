// Attention kernels shared by the attention types.
#include "latentmoe/model/attention.h"

#include <ATen/ops/constant_pad_nd.h>
#include <ATen/ops/scaled_dot_product_attention.h>
#include <c10/core/impl/LocalDispatchKeySet.h>

#include <limits>

#include "latentmoe/ops/linear.h"

namespace latentmoe::model {

// MLA's value heads are narrower than its query/key heads, which keeps torch's CPU SDPA on its
// math path (scores materialized, masks built per call). Padding the values lets its fused
// (flash) CPU kernel run: measured fwd+bwd at seq 512, 8 heads, 96/64 dims, 2 threads,
// 108 -> 34 ms in bf16 and 99 -> 55 ms in fp32; at seq 128 the padded kernel is slower (3.4 vs
// 6.7 ms in bf16 at 48/32 dims), so shorter sequences keep the plain call. The zero columns
// contribute nothing to the kept ones, and their gradient is cut away by the narrow.
torch::Tensor causal_attention(const torch::Tensor& query, const torch::Tensor& key, const torch::Tensor& value,
                               double scale, bool grouped) {
  const int64_t width = query.size(-1), value_width = value.size(-1);
  if (!query.device().is_cpu() || value_width >= width || query.size(-2) < kPadValueFromSeq) {
    return at::scaled_dot_product_attention(query, key, value, /*attn_mask=*/{}, /*dropout_p=*/0.0,
                                            /*is_causal=*/true, /*scale=*/scale, /*enable_gqa=*/grouped);
  }
  const torch::Tensor padded = at::constant_pad_nd(value, {0, width - value_width});
  return at::scaled_dot_product_attention(query, key, padded, /*attn_mask=*/{}, /*dropout_p=*/0.0,
                                          /*is_causal=*/true, /*scale=*/scale, /*enable_gqa=*/grouped)
      .narrow(-1, 0, value_width);
}

torch::Tensor causal_attention_autocast(const torch::Tensor& query, const torch::Tensor& key,
                                        const torch::Tensor& value, double scale, bool grouped) {
  if (const auto dtype = ops::emulated_autocast_dtype(query.device().type())) {
    // No native low-precision GEMMs here: attention in fp32 on operands rounded as autocast would.
    const c10::impl::ExcludeDispatchKeyGuard no_autocast(c10::DispatchKeySet(c10::DispatchKey::AutocastCPU));
    return causal_attention(ops::rounded_to(query, *dtype), ops::rounded_to(key, *dtype),
                            ops::rounded_to(value, *dtype), scale, grouped)
        .to(*dtype);
  }
  return causal_attention(query, key, value, scale, grouped);
}

torch::Tensor cached_attention(const torch::Tensor& query, const torch::Tensor& key, const torch::Tensor& value,
                               int64_t start, double scale, int64_t group) {
  const int64_t batch = query.size(0), heads = query.size(1), seq = query.size(2), end = start + seq;
  const auto long_options = torch::TensorOptions(torch::kLong).device(query.device());
  const torch::Tensor k = key.narrow(2, 0, end), v = value.narrow(2, 0, end);
  // A key/value head's query group as one row block: [b, h/group, group·s, d], rows head-major.
  const torch::Tensor grouped = query.reshape({batch, heads / group, group * seq, query.size(3)});
  torch::Tensor scores = torch::matmul(grouped, k.transpose(-1, -2)).to(torch::kFloat) * scale;  // [b,kv,g·s,t]
  const torch::Tensor query_pos = torch::arange(start, end, long_options).repeat({group});
  const torch::Tensor key_pos = torch::arange(0, end, long_options);
  scores = scores.masked_fill(key_pos.unsqueeze(0) > query_pos.unsqueeze(1), -std::numeric_limits<float>::infinity());
  return torch::matmul(torch::softmax(scores, -1).to(v.scalar_type()), v).reshape({batch, heads, seq, v.size(3)});
}

}  // namespace latentmoe::model
