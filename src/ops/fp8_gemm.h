// The GEMM of two quantized operands: a [M, K] and b [N, K], both with their tiles along K;
// returns a @ b^T [M, N] in out_dtype. CUDA sm_90 takes torch's blockwise-scaled cuBLASLt matmul;
// everything else dequantizes and multiplies in fp32 (fp8_linear.h says why that is the emulation).
#pragma once

#include <ATen/core/Tensor.h>

#include <optional>

#include "latentmoe/ops/fp8.h"

namespace latentmoe::ops::fp8 {

// How an operand's scales tile it: rows = 1x128 along K, blocks = 128x128, tensor = one scale.
enum class Tiling { rows, blocks, tensor };

struct Operand {
  Quantized q;
  Tiling tiling;
};

// t quantized with `tiling`'s scales, or one scale when the recipe is tensorwise.
Operand quantize(const at::Tensor& t, Tiling tiling, const Recipe& recipe);
at::Tensor dequantize(const Operand& operand, at::ScalarType dtype = at::kFloat);

at::Tensor mm_quantized(const Operand& a, const Operand& b, at::ScalarType out_dtype);

// The CUDA path (fp8_cuda.cpp): nullopt where it does not apply (no CUDA build, not sm_90, shapes
// cuBLASLt's FP8 GEMM does not take); then mm_quantized emulates.
std::optional<at::Tensor> scaled_mm_cuda(const Operand& a, const Operand& b, at::ScalarType out_dtype);

}  // namespace latentmoe::ops::fp8
