// linear: y = x @ weight^T + bias for every projection of the model, with the low-precision
// policy in one place. Outside autocast it is at::linear. Under bf16/fp16 autocast the operands
// are rounded to the autocast dtype and the GEMM runs either in that dtype (native: the CPU has
// bf16 dot-product instructions, or a GPU) or - on CPUs without them, where torch's bf16 GEMM
// falls back to a scalar loop 20-150x slower than fp32 - as an fp32 GEMM on the rounded operands
// with the product rounded back ("emulated"): the rounding model of a bf16 tensor-core GEMM
// (exact products, fp32 accumulation, bf16 result), at fp32 speed.
#pragma once

#include <ATen/core/Tensor.h>

#include <optional>
#include <string>

namespace latentmoe::ops {

enum class LowPrecisionGemm { automatic, native, emulated };

// Process-wide choice for CPU GEMMs under autocast (precision.cpu_low_precision_gemm). automatic
// measures both once per dtype (a few ms) and picks emulated when native is > 2x slower.
void set_cpu_low_precision_gemm(LowPrecisionGemm mode);
LowPrecisionGemm parse_low_precision_gemm(const std::string& name);  // "auto" | "native" | "emulated"

struct GemmChoice {
  bool emulated = false;
  double native_gflops = 0, fp32_gflops = 0;  // measured when the mode is automatic, else 0
};
// The choice for CPU GEMMs in `dtype` (bf16 or fp16), measuring on first use under automatic.
GemmChoice cpu_low_precision_gemm(at::ScalarType dtype);

// The autocast dtype when autocast is on for `device` and its GEMMs are emulated there (then
// other GEMM-heavy ops, attention, should run in fp32 on operands rounded to it), else nullopt.
std::optional<at::ScalarType> emulated_autocast_dtype(c10::DeviceType device);

// t rounded to `dtype` and back to fp32: an operand of an emulated low-precision GEMM.
at::Tensor rounded_to(const at::Tensor& t, at::ScalarType dtype);

// x [..., in], weight [out, in], bias [out] or undefined. Differentiable (composite ATen ops).
at::Tensor linear(const at::Tensor& x, const at::Tensor& weight, const std::optional<at::Tensor>& bias = std::nullopt);

}  // namespace latentmoe::ops
