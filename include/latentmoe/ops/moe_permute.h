// MoE permute / unpermute: tokens into the expert-sorted order the grouped GEMMs read, and the
// gate-weighted combine back. Both are driven by `positions` [tokens, top_k]: the row of the
// sorted order that holds token t's j-th choice (a permutation of 0..tokens*top_k-1). Each output
// row is written by exactly one thread in a fixed order: deterministic, no atomics. Registered as
// torch.ops.latentmoe.moe_permute / moe_unpermute (CPU, any-device ATen body, Autograd).
#pragma once

#include <ATen/core/Tensor.h>

#include <optional>

namespace latentmoe::ops {

// positions[t, j] = the sorted row of the (t, j) assignment, from the flat assignment order that
// sorts expert ids (order[i] = flat index t * top_k + j of the i-th sorted assignment).
at::Tensor moe_positions(const at::Tensor& order, int64_t top_k);

// sorted[positions[t, j]] = tokens[t]: [tokens * top_k, hidden]. Differentiable in tokens.
at::Tensor moe_permute(const at::Tensor& tokens, const at::Tensor& positions);

// out[t] = sum_j weights[t, j] * sorted[positions[t, j]] (fp32 sums, j in order): [tokens, hidden]
// in sorted's dtype. weights [tokens, top_k] fp32. Differentiable in sorted and weights.
at::Tensor moe_unpermute(const at::Tensor& sorted, const at::Tensor& positions, const at::Tensor& weights);

// The specifications in plain ATen ops (index_select / index_add).
at::Tensor moe_permute_reference(const at::Tensor& tokens, const at::Tensor& positions);
at::Tensor moe_unpermute_reference(const at::Tensor& sorted, const at::Tensor& positions, const at::Tensor& weights);

}  // namespace latentmoe::ops
