// Input validation shared by every implementation of an op (CPU, CUDA, reference), so that a bad
// call gets the same message whichever device runs it.
#pragma once

#include <ATen/ATen.h>

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

}  // namespace latentmoe::ops
