// rms_norm: y = x / sqrt(mean(x^2, -1) + eps) * weight, computed in fp32 and rounded once to x's
// dtype. Registered as torch.ops.latentmoe.rms_norm (CPU, CUDA and Autograd kernels); the backward
// recomputes nothing but uses the per-row 1/rms saved by the forward.
#pragma once

#include <ATen/core/Tensor.h>

namespace latentmoe::ops {

// x [..., dim] fp32/bf16/fp16, weight [dim] (fp32 master weights or x's dtype). Returns x's
// shape and dtype. Differentiable in x and weight.
at::Tensor rms_norm(const at::Tensor& x, const at::Tensor& weight, double eps);

// The specification in plain ATen ops (differentiable through ATen's autograd), for tests and
// benchmarks.
at::Tensor rms_norm_reference(const at::Tensor& x, const at::Tensor& weight, double eps);

}  // namespace latentmoe::ops
