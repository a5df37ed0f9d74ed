// FP8 e4m3 quantization with fine-grained scales (the rules are in include/latentmoe/ops/fp8.h:
// scale = amax / 448, floored at FLT_MIN, 1 for an all-zero tile, NaN for a non-finite one,
// optionally rounded up to a power of two; values clamped to +-448, rounded to nearest even).
// Framework-agnostic: raw pointers and a stream, no torch headers. Scales are fp32, data is one
// e4m3 byte per element.
#pragma once

#include <cuda_runtime_api.h>

#include <cstdint>

namespace latentmoe::kernels {

enum class Fp8Input { f32, bf16, f16 };

// x [rows, k] row-major -> data [rows, k], scales [rows, ceil(k / 128)] (1x128 tiles).
cudaError_t fp8_quantize_rows(const void* x, Fp8Input dtype, int64_t rows, int64_t k, bool pow2_scales,
                              uint8_t* data, float* scales, cudaStream_t stream);

// x [rows, k] row-major -> data [k, rows] (x^T), scales [k, ceil(rows / 128)]: x^T's 1x128 tiles
// (per column of x, per 128 rows), the operand layout of the weight-gradient GEMM.
cudaError_t fp8_quantize_rows_transposed(const void* x, Fp8Input dtype, int64_t rows, int64_t k, bool pow2_scales,
                                         uint8_t* data, float* scales, cudaStream_t stream);

// w [batch, n, k] row-major -> data [batch, n, k], scales [batch, ceil(n / 128), ceil(k / 128)].
cudaError_t fp8_quantize_blocks(const void* w, Fp8Input dtype, int64_t batch, int64_t n, int64_t k, bool pow2_scales,
                                uint8_t* data, float* scales, cudaStream_t stream);

}  // namespace latentmoe::kernels
