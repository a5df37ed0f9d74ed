// Helpers shared by the CPU kernels of the custom ops: fp32 loads/stores of fp32 and bf16 data and
// the attribute that compiles a row kernel once per x86-64 level (AVX2+FMA and the baseline),
// picked at load time by the CPU, so one binary runs everywhere and vectorizes where it can.
#pragma once

#include <c10/core/ScalarType.h>
#include <c10/util/BFloat16.h>
#include <c10/util/Exception.h>
#include <c10/util/Half.h>

#include <cstdint>
#include <cstring>

#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__) && !defined(__SANITIZE_ADDRESS__)
#define LMOE_CPU_CLONES __attribute__((target_clones("arch=x86-64-v3", "default")))
#else
#define LMOE_CPU_CLONES
#endif
#define LMOE_ALWAYS_INLINE inline __attribute__((always_inline))

namespace latentmoe::ops::cpu {

LMOE_ALWAYS_INLINE float to_float(float v) { return v; }
LMOE_ALWAYS_INLINE float to_float(c10::BFloat16 v) {
  const uint32_t bits = static_cast<uint32_t>(v.x) << 16;
  float out;
  std::memcpy(&out, &bits, sizeof(out));
  return out;
}
LMOE_ALWAYS_INLINE float to_float(c10::Half v) { return static_cast<float>(v); }

template <typename T>
LMOE_ALWAYS_INLINE T from_float(float v);
template <>
LMOE_ALWAYS_INLINE c10::Half from_float<c10::Half>(float v) {
  return c10::Half(v);
}
template <>
LMOE_ALWAYS_INLINE float from_float<float>(float v) {
  return v;
}
// Round to nearest even as c10::BFloat16(float) does, with a select instead of its NaN branch so
// that loops vectorize (a NaN keeps its upper bits plus the quiet bit; rounding could overflow it).
template <>
LMOE_ALWAYS_INLINE c10::BFloat16 from_float<c10::BFloat16>(float v) {
  uint32_t bits;
  std::memcpy(&bits, &v, sizeof(bits));
  const uint32_t is_nan = static_cast<uint32_t>((bits & 0x7fffffffu) > 0x7f800000u);
  const uint32_t rounded = (bits + 0x7fffu + ((bits >> 16) & 1u)) >> 16;
  const uint32_t out = is_nan ? ((bits >> 16) | 0x40u) : rounded;
  return c10::BFloat16(static_cast<uint16_t>(out), c10::BFloat16::from_bits());
}

// exp(x) in fp32 without libm and without branches, so that loops over it vectorize (relative
// error < 2e-7 on [-87, 88]; inputs are clamped to that range, NaN stays NaN). Cephes' expf
// polynomial; the rounding to an integer adds and subtracts 1.5 * 2^23 (no floorf call).
LMOE_ALWAYS_INLINE float fast_exp(float x) {
  x = x > 88.0f ? 88.0f : x;  // written so that NaN passes through both
  x = x < -87.0f ? -87.0f : x;
  constexpr float kRound = 12582912.0f;
  const float n = (x * 1.44269504088896341f + kRound) - kRound;
  float f = x - n * 0.693359375f;
  f = f - n * -2.12194440e-4f;
  float p = 1.9875691500e-4f;
  p = p * f + 1.3981999507e-3f;
  p = p * f + 8.3334519073e-3f;
  p = p * f + 4.1665795894e-2f;
  p = p * f + 1.6666665459e-1f;
  p = p * f + 5.0000001201e-1f;
  p = p * f * f + f + 1.0f;
  const int32_t exponent = (static_cast<int32_t>(n) + 127) << 23;
  float scale;
  std::memcpy(&scale, &exponent, sizeof(scale));
  return p * scale;
}

// Rows per task of at::parallel_for for row-wise kernels: enough work per task to amortize the
// OpenMP hand-off at narrow widths.
inline int64_t row_grain(int64_t width) { return width >= 4096 ? 1 : (4096 + width - 1) / width; }

// fn(T{}) for the element type of `type` (fp32, bf16, fp16); any other type is an error naming op.
template <typename Fn>
void dispatch_float_type(at::ScalarType type, const char* op, Fn&& fn) {
  switch (type) {
    case at::kFloat: return fn(float{});
    case at::kBFloat16: return fn(c10::BFloat16{});
    case at::kHalf: return fn(c10::Half{});
    default: TORCH_CHECK(false, op, ": unsupported dtype ", type);
  }
}

}  // namespace latentmoe::ops::cpu
