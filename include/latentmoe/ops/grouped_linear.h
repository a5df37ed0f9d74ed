// grouped_linear: the routed experts' projections as one op. Rows of x come grouped by expert
// (group_sizes[e] consecutive rows for expert e, the order MoE dispatch sorts tokens into) and
// group e is multiplied by weight[e]^T: out[rows of e] = x[rows of e] @ weight[e]^T. Registered as
// torch.ops.latentmoe.grouped_linear (CPU, any-device ATen body, Autograd); the backward gives
// dx and the stacked dweight [E, out, in] (zero for an expert without rows).
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/util/ArrayRef.h>

namespace latentmoe::ops {

// x [rows, in], weight [E, out, in] (same dtype), group_sizes: E non-negative sizes summing to rows.
// Under autocast the operands are cast (or, where CPU bf16 GEMMs are emulated, rounded) to the
// autocast dtype like every other projection (ops::linear). Differentiable in x and weight.
at::Tensor grouped_linear(const at::Tensor& x, const at::Tensor& weight, c10::IntArrayRef group_sizes);

// The specification: one at::linear per group, concatenated.
at::Tensor grouped_linear_reference(const at::Tensor& x, const at::Tensor& weight, c10::IntArrayRef group_sizes);

// How the CPU kernel runs the groups: one GEMM per group (each using all threads), or torch's
// at::_grouped_mm. Chosen by measurement (bench/bench_fused_ops.cpp); settable for that benchmark.
enum class GroupedGemmImpl { per_group_gemm, torch_grouped_mm };
void set_cpu_grouped_gemm_impl(GroupedGemmImpl impl);

}  // namespace latentmoe::ops
