// FP8 (e4m3) quantization with fine-grained scales, as DeepSeek-V3 trains (report §3.3):
// activations and activation gradients per 1x128 tile (one scale per row and 128 consecutive
// columns), weights per 128x128 block, fp32 scales. A quantized tensor is (data, scales) with
// x ~= data * scale (the scale is DeepSeek's `weight_scale_inv`: amax / 448).
//
// Rounding is e4m3's exactly: x / scale is clamped to [-448, 448] (saturation: e4m3fn has no
// infinity) and rounded to nearest, ties to even, with e4m3's subnormals (steps of 2^-9 below
// 2^-6) and flush to zero below 2^-10. An all-zero tile gets scale 1 and stays zero; partial tiles
// at the right/bottom edge are scaled by their own amax. A tile holding NaN or +-Inf gets a NaN
// scale, so the whole tile dequantizes to NaN (the trainer's non-finite guard then skips the step)
// rather than being silently flushed. With pow2 scales the scale is rounded up to a power of two
// (UE8M0-style hardware), so no value saturates either way.
#pragma once

#include <ATen/core/Tensor.h>

#include <string>

namespace latentmoe::ops::fp8 {

constexpr double kE4m3Max = 448.0;
constexpr int64_t kTile = 128;

// precision.fp8: none | blockwise (1x128 activations, 128x128 weights) | tensorwise (one scale
// per tensor: the negative control showing why fine-grained scales matter).
enum class Scaling { none, blockwise, tensorwise };
Scaling parse_scaling(const std::string& name);
const char* scaling_name(Scaling scaling);

struct Recipe {
  Scaling scaling = Scaling::none;
  bool pow2_scales = false;  // precision.fp8_pow2_scales
  bool enabled() const { return scaling != Scaling::none; }
};

// data: at::kFloat8_e4m3fn, the input's shape. scales: fp32; for rows [..., ceil(K/128)], for
// blocks [..., ceil(N/128), ceil(K/128)], for a tensor [1].
struct Quantized {
  at::Tensor data, scales;
};

// x [..., K] (fp32/bf16/fp16): one scale per row per 128 columns. Op latentmoe::fp8_quantize_rows.
Quantized quantize_rows(const at::Tensor& x, bool pow2_scales);
// x [M, K] -> x^T's rows: data [K, M], scales [K, ceil(M/128)] (per column of x per 128 rows; the
// weight-gradient GEMM's operand). Op latentmoe::fp8_quantize_rows_transposed (fused on CUDA).
Quantized quantize_rows_transposed(const at::Tensor& x, bool pow2_scales);
// w [..., N, K]: one scale per 128x128 block of the last two dims. Op latentmoe::fp8_quantize_blocks.
Quantized quantize_blocks(const at::Tensor& w, bool pow2_scales);
// One scale for the whole tensor.
Quantized quantize_tensor(const at::Tensor& x, bool pow2_scales);

// data * scale (scales broadcast over their tiles), in `dtype`.
at::Tensor dequantize_rows(const Quantized& q, at::ScalarType dtype = at::kFloat);
at::Tensor dequantize_blocks(const Quantized& q, at::ScalarType dtype = at::kFloat);
at::Tensor dequantize_tensor(const Quantized& q, at::ScalarType dtype = at::kFloat);

// The specification the kernels are tested against: tile amax, scale, clamp, e4m3 cast in
// composite ATen ops.
Quantized quantize_rows_reference(const at::Tensor& x, bool pow2_scales);
Quantized quantize_blocks_reference(const at::Tensor& w, bool pow2_scales);

// Tests and benchmarks: false runs the portable CPU loops even on a CPU with AVX-512 (both must
// give the same bits).
void set_cpu_avx512(bool enabled);

// Element-wise e4m3 round-to-nearest-even of fp32 values already in range (|v| <= 448 or NaN),
// written from the bit layout (independent of torch's cast): the tests' ground truth.
float round_to_e4m3_bits(float v);

}  // namespace latentmoe::ops::fp8
