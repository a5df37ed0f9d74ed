// swiglu: silu(gate) * up, computed in fp32 and rounded once. Registered as
// torch.ops.latentmoe.swiglu (CPU, CUDA and Autograd kernels); the backward keeps only gate and up
// (no saved sigmoid or product).
#pragma once

#include <ATen/core/Tensor.h>

namespace latentmoe::ops {

// gate, up: same shape and dtype (fp32/bf16/fp16). Differentiable in both.
at::Tensor swiglu(const at::Tensor& gate, const at::Tensor& up);

// The specification in plain ATen ops.
at::Tensor swiglu_reference(const at::Tensor& gate, const at::Tensor& up);

// The same on [..., 2 x width] rows holding gate then up (the output of one GEMM for both
// projections, as the stacked routed experts compute it); the gradient comes back packed alike.
at::Tensor swiglu_packed(const at::Tensor& gate_up);
at::Tensor swiglu_packed_reference(const at::Tensor& gate_up);

}  // namespace latentmoe::ops
