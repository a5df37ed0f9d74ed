// FP8 projections (precision.fp8): y = x @ weight^T with both GEMM inputs quantized to e4m3 in the
// forward and the backward, as DeepSeek-V3 trains (report §3.3, Figure 6):
//   forward  y  = Q_rows(x)      @ Q_blocks(W)^T        (x per token per 128 channels)
//   dgrad    dx = Q_rows(dy)     @ Q_blocks(W)          (dy per token per 128 channels)
//   wgrad    dW = Q_rows(dy^T)   @ Q_rows(x^T)^T        (both per channel per 128 tokens)
// The activation the backward needs is saved only as its transposed e4m3 copy (1 byte/element +
// one fp32 scale per 128), not in bf16/fp32. The weight is re-quantized in the backward (the same
// bits: the parameter does not change between forward and backward).
//
// Accumulation: the CPU (and any-device) emulation dequantizes exactly (e4m3 x fp32 scale, one fp32
// rounding) and multiplies in fp32 with fp32 accumulation over the whole K. That is at least as
// precise as the report's tensor cores (partial sums promoted to fp32 every 128 elements of K), so
// the emulation isolates the quantization error. On a CUDA sm_90 device the forward and dgrad GEMMs
// go to torch's blockwise-scaled cuBLASLt matmul (BlockWise1x128 x BlockWise128x128, fp32
// accumulation), the wgrad to BlockWise1x128 x BlockWise1x128.
// Results are in the autocast dtype when autocast is on, else in x's dtype; dW in the weight's dtype.
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/util/ArrayRef.h>

#include <optional>
#include <string>

#include "latentmoe/ops/fp8.h"

namespace latentmoe::ops::fp8 {

// x [..., in], weight [out, in], bias [out] or undefined. `layer` names the statistics (fp8_stats.h).
at::Tensor linear(const at::Tensor& x, const at::Tensor& weight, const std::optional<at::Tensor>& bias,
                  const Recipe& recipe, const std::string& layer);

// The routed experts' projections (ops::grouped_linear) in FP8: rows grouped by expert, weight
// [E, out, in] quantized per expert per 128x128 block; the wgrad's per-128-token tiles never cross
// an expert's rows.
at::Tensor grouped_linear(const at::Tensor& x, const at::Tensor& weight, c10::IntArrayRef group_sizes,
                          const Recipe& recipe, const std::string& layer);

// How many GEMMs took the CUDA blockwise-scaled path (cuBLASLt) in this process: the GPU tests
// check that it ran, rather than the emulation it falls back to.
int64_t cuda_scaled_mm_calls();

// SwiGLU (ops::swiglu / swiglu_packed) whose backward keeps its input as the e4m3 copy (1x128
// tiles) rather than in bf16/fp32, as the report stores the SwiGLU inputs of the MoE: the forward
// is exact, the gradient is taken at the dequantized input. (The report also recomputes the
// SwiGLU output for the down projection's weight gradient; here the down projection keeps its own
// e4m3 copy of that output, one byte per element more.)
at::Tensor swiglu(const at::Tensor& gate, const at::Tensor& up, const Recipe& recipe);
at::Tensor swiglu_packed(const at::Tensor& gate_up, const Recipe& recipe);

}  // namespace latentmoe::ops::fp8
