// Input validation shared by every implementation of an op (CPU, CUDA, reference), so that a bad
// call gets the same message whichever device runs it.
#pragma once

#include <ATen/ATen.h>

#include <optional>
#include <vector>

namespace latentmoe::ops {

inline bool is_supported_float(at::ScalarType t) { return t == at::kFloat || t == at::kBFloat16 || t == at::kHalf; }

inline void check_expert_token_counts_inputs(const at::Tensor& expert_ids, int64_t num_experts) {
  TORCH_CHECK(num_experts > 0, "expert_token_counts: num_experts must be > 0, got ", num_experts);
  TORCH_CHECK(!at::isFloatingType(expert_ids.scalar_type()) && expert_ids.scalar_type() != at::kBool,
              "expert_token_counts: expert_ids must be an integer tensor, got ", expert_ids.scalar_type());
}

inline void check_rms_norm_inputs(const at::Tensor& x, const at::Tensor& weight) {
  TORCH_CHECK(x.dim() >= 1, "rms_norm: x must have at least one dimension, got a scalar");
  TORCH_CHECK(is_supported_float(x.scalar_type()), "rms_norm: x must be float32, bfloat16 or float16, got ",
              x.scalar_type());
  TORCH_CHECK(weight.dim() == 1 && weight.size(0) == x.size(-1), "rms_norm: weight must be [", x.size(-1),
              "] (x's last dimension), got ", weight.sizes());
  TORCH_CHECK(weight.scalar_type() == at::kFloat || weight.scalar_type() == x.scalar_type(),
              "rms_norm: weight must be float32 or x's dtype (", x.scalar_type(), "), got ", weight.scalar_type());
  TORCH_CHECK(x.device() == weight.device(), "rms_norm: x is on ", x.device(), " but weight on ", weight.device());
}

inline void check_rotary_inputs(const at::Tensor& x, const at::Tensor& cos, const at::Tensor& sin) {
  TORCH_CHECK(x.dim() == 4, "rotary_embedding: x must be [batch, heads, seq, rope_dim], got ", x.sizes());
  TORCH_CHECK(is_supported_float(x.scalar_type()), "rotary_embedding: x must be float32, bfloat16 or float16, got ",
              x.scalar_type());
  const int64_t batch = x.size(0), seq = x.size(2), rope = x.size(3);
  TORCH_CHECK(rope % 2 == 0, "rotary_embedding: rope_dim must be even, got ", rope);
  TORCH_CHECK(cos.sizes() == sin.sizes(), "rotary_embedding: cos ", cos.sizes(), " and sin ", sin.sizes(), " differ");
  TORCH_CHECK(cos.dim() == 3 && (cos.size(0) == 1 || cos.size(0) == batch) && cos.size(1) == seq &&
                  cos.size(2) == rope / 2,
              "rotary_embedding: cos/sin must be [1 or ", batch, ", ", seq, ", ", rope / 2, "], got ", cos.sizes());
  TORCH_CHECK(cos.scalar_type() == at::kFloat && sin.scalar_type() == at::kFloat,
              "rotary_embedding: cos/sin must be float32, got ", cos.scalar_type());
  TORCH_CHECK(cos.device() == x.device() && sin.device() == x.device(), "rotary_embedding: x is on ", x.device(),
              " but cos/sin on ", cos.device());
}

inline void check_swiglu_inputs(const at::Tensor& gate, const at::Tensor& up) {
  TORCH_CHECK(gate.sizes() == up.sizes(), "swiglu: gate and up must have the same shape, got ", gate.sizes(), " and ",
              up.sizes());
  TORCH_CHECK(gate.scalar_type() == up.scalar_type(), "swiglu: gate and up must have the same dtype, got ",
              gate.scalar_type(), " and ", up.scalar_type());
  TORCH_CHECK(is_supported_float(gate.scalar_type()), "swiglu: inputs must be float32, bfloat16 or float16, got ",
              gate.scalar_type());
  TORCH_CHECK(gate.device() == up.device(), "swiglu: gate is on ", gate.device(), " but up on ", up.device());
}

inline void check_grouped_linear_inputs(const at::Tensor& x, const at::Tensor& weight, c10::IntArrayRef group_sizes) {
  TORCH_CHECK(x.dim() == 2, "grouped_linear: x must be [rows, in], got ", x.sizes());
  TORCH_CHECK(weight.dim() == 3, "grouped_linear: weight must be [experts, out, in], got ", weight.sizes());
  TORCH_CHECK(is_supported_float(x.scalar_type()), "grouped_linear: x must be float32, bfloat16 or float16, got ",
              x.scalar_type());
  TORCH_CHECK(x.scalar_type() == weight.scalar_type(), "grouped_linear: x (", x.scalar_type(), ") and weight (",
              weight.scalar_type(), ") must have the same dtype");
  TORCH_CHECK(weight.size(2) == x.size(1), "grouped_linear: weight's in dimension ", weight.size(2),
              " does not match x's ", x.size(1));
  TORCH_CHECK(static_cast<int64_t>(group_sizes.size()) == weight.size(0), "grouped_linear: ", group_sizes.size(),
              " group sizes for ", weight.size(0), " experts");
  int64_t rows = 0;
  for (size_t e = 0; e < group_sizes.size(); ++e) {
    TORCH_CHECK(group_sizes[e] >= 0, "grouped_linear: group ", e, " has a negative size ", group_sizes[e]);
    rows += group_sizes[e];
  }
  TORCH_CHECK(rows == x.size(0), "grouped_linear: the group sizes sum to ", rows, " rows but x has ", x.size(0));
  TORCH_CHECK(x.device() == weight.device(), "grouped_linear: x is on ", x.device(), " but weight on ", weight.device());
}

// data: tokens [T, hidden] (permute) or sorted rows [T * top_k, hidden] (unpermute); positions
// [T, top_k] a permutation of 0..T*top_k-1 (checked on the CPU: a repeated row would be a race).
inline void check_moe_permute_inputs(const char* op, const at::Tensor& data, const at::Tensor& positions,
                                     const std::optional<at::Tensor>& weights, int64_t data_rows) {
  TORCH_CHECK(positions.dim() == 2, op, ": positions must be [tokens, top_k], got ", positions.sizes());
  TORCH_CHECK(!at::isFloatingType(positions.scalar_type()) && positions.scalar_type() != at::kBool, op,
              ": positions must be an integer tensor, got ", positions.scalar_type());
  TORCH_CHECK(data.dim() == 2, op, ": rows must be [rows, hidden], got ", data.sizes());
  TORCH_CHECK(is_supported_float(data.scalar_type()), op, ": rows must be float32, bfloat16 or float16, got ",
              data.scalar_type());
  TORCH_CHECK(data.size(0) == data_rows, op, ": ", data.size(0), " rows for positions ", positions.sizes(),
              " (expected ", data_rows, ")");
  TORCH_CHECK(data.device() == positions.device(), op, ": rows are on ", data.device(), " but positions on ",
              positions.device());
  if (weights && weights->defined()) {
    TORCH_CHECK(weights->sizes() == positions.sizes(), op, ": weights ", weights->sizes(), " must match positions ",
                positions.sizes());
    TORCH_CHECK(at::isFloatingType(weights->scalar_type()), op, ": weights must be floating point, got ",
                weights->scalar_type());
  }
  if (positions.is_cpu()) {
    const at::Tensor flat = positions.to(at::kLong).contiguous().view(-1);
    const int64_t n = flat.numel();
    const int64_t* p = flat.const_data_ptr<int64_t>();
    std::vector<bool> seen(static_cast<size_t>(n), false);
    for (int64_t i = 0; i < n; ++i) {
      TORCH_CHECK(p[i] >= 0 && p[i] < n, op, ": position ", p[i], " at ", i, " is outside [0, ", n, ")");
      TORCH_CHECK(!seen[static_cast<size_t>(p[i])], op, ": position ", p[i], " appears twice (positions must be a permutation)");
      seen[static_cast<size_t>(p[i])] = true;
    }
  }
}

inline void check_moe_router_inputs(const at::Tensor& logits, const at::Tensor& bias, int64_t top_k, int64_t n_group,
                                    int64_t topk_group) {
  TORCH_CHECK(logits.dim() == 2, "moe_router: logits must be [tokens, experts], got ", logits.sizes());
  TORCH_CHECK(logits.scalar_type() == at::kFloat, "moe_router: logits must be float32 (gating stays fp32), got ",
              logits.scalar_type());
  const int64_t experts = logits.size(1);
  TORCH_CHECK(bias.dim() == 1 && bias.size(0) == experts && bias.scalar_type() == at::kFloat,
              "moe_router: bias must be float32 [", experts, "], got ", bias.scalar_type(), " ", bias.sizes());
  TORCH_CHECK(n_group >= 1 && experts % n_group == 0, "moe_router: n_group ", n_group, " must divide the ", experts,
              " experts");
  TORCH_CHECK(topk_group >= 1 && topk_group <= n_group, "moe_router: topk_group ", topk_group, " must be in [1, ",
              n_group, "]");
  TORCH_CHECK(top_k >= 1 && top_k <= topk_group * (experts / n_group), "moe_router: top_k ", top_k,
              " must be in [1, ", topk_group * (experts / n_group), "] (the experts of the kept groups)");
  TORCH_CHECK(logits.device() == bias.device(), "moe_router: logits are on ", logits.device(), " but bias on ",
              bias.device());
}

}  // namespace latentmoe::ops
