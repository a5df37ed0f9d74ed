// FP8 CPU inner loops: portable and AVX-512 (fp32/bf16 inputs), chosen per call by has_avx512().
#include "ops/fp8_cpu.h"

#include <c10/util/Float8_e4m3fn.h>

#include <array>
#include <atomic>
#include <cfloat>
#include <cmath>
#include <cstring>
#include <limits>
#include <algorithm>

#include "ops/cpu_kernel_util.h"
#include "ops/cpu_vec.h"

namespace latentmoe::ops::fp8::cpu {

namespace {

constexpr float kMax = 448.0f;
constexpr float kRoundToInt = 8388608.0f;  // 2^23: x + 2^23 - 2^23 rounds x in [0, 2^22) to an integer (RNE)

// e4m3 code of q (|q| <= 448 or NaN). Normal range: the fp32 mantissa rounded to 3 bits, the
// exponent rebiased 127 -> 7. Below 2^-6: subnormals, q / 2^-9 rounded to an integer (0..8; 8
// is 2^-6, the same as normal code 8).
inline uint8_t e4m3_code(float q) {
  uint32_t bits;
  std::memcpy(&bits, &q, sizeof(bits));
  const uint32_t sign = (bits >> 24) & 0x80u, magnitude = bits & 0x7FFFFFFFu;
  float a;
  std::memcpy(&a, &magnitude, sizeof(a));
  const float small = a < 0x1p-6f ? a : 0.0f;  // NaN never reaches the integer conversion
  const uint32_t subnormal = static_cast<uint32_t>((small * 512.0f + kRoundToInt) - kRoundToInt);
  const uint32_t rounded = magnitude + 0x7FFFFu + ((magnitude >> 20) & 1u);
  const uint32_t normal = (rounded >> 20) - (120u << 3);
  const uint32_t code = sign | (a < 0x1p-6f ? subnormal : normal);
  return static_cast<uint8_t>(magnitude > 0x7F800000u ? 0x7Fu : code);  // NaN: 0x7F, as the CUDA kernel writes
}

const std::array<float, 256>& table() {
  static const auto values = [] {
    std::array<float, 256> t{};
    for (int code = 0; code < 256; ++code) {
      t[static_cast<size_t>(code)] =
          static_cast<float>(c10::Float8_e4m3fn(static_cast<uint8_t>(code), c10::Float8_e4m3fn::from_bits()));
    }
    return t;
  }();
  return values;
}

template <typename T>
bool tile_amax_portable(const T* src, int64_t n, float* amax) {
  float m = *amax;
  bool finite = true;
  for (int64_t i = 0; i < n; ++i) {
    const float a = std::fabs(ops::cpu::to_float(src[i]));
    finite &= a <= FLT_MAX;
    m = a > m ? a : m;
  }
  *amax = m;
  return finite;
}

template <typename T>
void encode_portable(const T* src, int64_t n, float scale, uint8_t* dst) {
  for (int64_t i = 0; i < n; ++i) {
    float q = ops::cpu::to_float(src[i]) / scale;
    q = q > kMax ? kMax : q;  // written so that NaN passes through both
    q = q < -kMax ? -kMax : q;
    dst[i] = e4m3_code(q);
  }
}

#if LMOE_HAVE_AVX512_KERNELS
namespace v = ops::cpu::avx512;

template <typename T>
LMOE_AVX512 bool tile_amax_avx512(const T* src, int64_t n, float* amax) {
  const __m512 abs_mask = _mm512_castsi512_ps(_mm512_set1_epi32(0x7FFFFFFF)), limit = _mm512_set1_ps(FLT_MAX);
  __m512 m = _mm512_setzero_ps();
  __mmask16 bad = 0;
  for (int64_t i = 0; i < n; i += 16) {
    const __mmask16 lanes = v::first_lanes(n - i);
    const __m512 a = _mm512_and_ps(v::load(src + i, lanes, _mm512_setzero_ps()), abs_mask);
    bad |= _mm512_mask_cmp_ps_mask(lanes, a, limit, _CMP_NLE_UQ);  // NaN or > FLT_MAX
    m = _mm512_max_ps(m, a);
  }
  *amax = std::max(*amax, _mm512_reduce_max_ps(m));
  return bad == 0;
}

template <typename T>
LMOE_AVX512 void encode_avx512(const T* src, int64_t n, float scale, uint8_t* dst) {
  const __m512 s = _mm512_set1_ps(scale), hi = _mm512_set1_ps(kMax), lo = _mm512_set1_ps(-kMax);
  const __m512i magnitude_mask = _mm512_set1_epi32(0x7FFFFFFF);
  for (int64_t i = 0; i < n; i += 16) {
    const __mmask16 lanes = v::first_lanes(n - i);
    const __m512 raw = _mm512_div_ps(v::load(src + i, lanes, _mm512_setzero_ps()), s);
    const __mmask16 nan = _mm512_cmp_ps_mask(raw, raw, _CMP_UNORD_Q);
    const __m512 q = _mm512_min_ps(_mm512_max_ps(raw, lo), hi);
    const __m512i bits = _mm512_castps_si512(q);
    const __m512i sign = _mm512_and_si512(_mm512_srli_epi32(bits, 24), _mm512_set1_epi32(0x80));
    const __m512i magnitude = _mm512_and_si512(bits, magnitude_mask);
    const __m512 a = _mm512_castsi512_ps(magnitude);
    const __m512i subnormal = _mm512_cvttps_epi32(_mm512_roundscale_ps(_mm512_mul_ps(a, _mm512_set1_ps(512.0f)),
                                                                       _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC));
    const __m512i odd = _mm512_and_si512(_mm512_srli_epi32(magnitude, 20), _mm512_set1_epi32(1));
    const __m512i rounded = _mm512_add_epi32(magnitude, _mm512_add_epi32(odd, _mm512_set1_epi32(0x7FFFF)));
    const __m512i normal = _mm512_sub_epi32(_mm512_srli_epi32(rounded, 20), _mm512_set1_epi32(120 << 3));
    const __mmask16 small = _mm512_cmp_ps_mask(a, _mm512_set1_ps(0x1p-6f), _CMP_LT_OQ);
    const __m512i code = _mm512_or_si512(_mm512_mask_blend_epi32(small, normal, subnormal), sign);
    _mm512_mask_cvtepi32_storeu_epi8(dst + i, lanes, _mm512_mask_blend_epi32(nan, code, _mm512_set1_epi32(0x7F)));
  }
}

LMOE_AVX512 void decode_avx512(const uint8_t* data, int64_t n, float scale, float* out) {
  const __m512 s = _mm512_set1_ps(scale);
  for (int64_t i = 0; i < n; i += 16) {
    const __mmask16 lanes = v::first_lanes(n - i);
    const __m512i c = _mm512_cvtepu8_epi32(_mm_maskz_loadu_epi8(lanes, data + i));
    const __m512i sign = _mm512_slli_epi32(_mm512_and_si512(c, _mm512_set1_epi32(0x80)), 24);
    const __m512i exponent = _mm512_and_si512(_mm512_srli_epi32(c, 3), _mm512_set1_epi32(0xF));
    const __m512i mantissa = _mm512_and_si512(c, _mm512_set1_epi32(7));
    const __m512 normal = _mm512_castsi512_ps(_mm512_or_si512(
        sign, _mm512_or_si512(_mm512_slli_epi32(_mm512_add_epi32(exponent, _mm512_set1_epi32(120)), 23),
                              _mm512_slli_epi32(mantissa, 20))));
    const __m512 subnormal = _mm512_castsi512_ps(_mm512_or_si512(
        sign, _mm512_castps_si512(_mm512_mul_ps(_mm512_cvtepi32_ps(mantissa), _mm512_set1_ps(0x1p-9f)))));
    __m512 value = _mm512_mask_blend_ps(_mm512_cmpeq_epi32_mask(exponent, _mm512_setzero_si512()), normal, subnormal);
    const __mmask16 nan = _mm512_cmpeq_epi32_mask(_mm512_and_si512(c, _mm512_set1_epi32(0x7F)), _mm512_set1_epi32(0x7F));
    value = _mm512_mask_blend_ps(nan, value, _mm512_set1_ps(std::numeric_limits<float>::quiet_NaN()));
    _mm512_mask_storeu_ps(out + i, lanes, _mm512_mul_ps(value, s));
  }
}
#endif

}  // namespace

std::atomic<bool> g_portable_only{false};

#if LMOE_HAVE_AVX512_KERNELS
#define LMOE_FP8_DISPATCH(avx512_call, portable_call)                 \
  if (ops::cpu::has_avx512() && !g_portable_only.load()) return avx512_call; \
  return portable_call;
#else
#define LMOE_FP8_DISPATCH(avx512_call, portable_call) return portable_call;
#endif

bool tile_amax(const float* src, int64_t n, float* amax) {
  LMOE_FP8_DISPATCH(tile_amax_avx512(src, n, amax), tile_amax_portable(src, n, amax))
}
bool tile_amax(const c10::BFloat16* src, int64_t n, float* amax) {
  LMOE_FP8_DISPATCH(tile_amax_avx512(src, n, amax), tile_amax_portable(src, n, amax))
}
bool tile_amax(const c10::Half* src, int64_t n, float* amax) { return tile_amax_portable(src, n, amax); }

void encode(const float* src, int64_t n, float scale, uint8_t* dst) {
  LMOE_FP8_DISPATCH(encode_avx512(src, n, scale, dst), encode_portable(src, n, scale, dst))
}
void encode(const c10::BFloat16* src, int64_t n, float scale, uint8_t* dst) {
  LMOE_FP8_DISPATCH(encode_avx512(src, n, scale, dst), encode_portable(src, n, scale, dst))
}
void encode(const c10::Half* src, int64_t n, float scale, uint8_t* dst) { encode_portable(src, n, scale, dst); }

void decode(const uint8_t* data, int64_t n, float scale, float* out) {
#if LMOE_HAVE_AVX512_KERNELS
  if (ops::cpu::has_avx512() && !g_portable_only.load()) return decode_avx512(data, n, scale, out);
#endif
  const auto& values = table();
  for (int64_t i = 0; i < n; ++i) out[i] = values[data[i]] * scale;
}

}  // namespace latentmoe::ops::fp8::cpu

namespace latentmoe::ops::fp8 {
void set_cpu_avx512(bool enabled) { cpu::g_portable_only = !enabled; }
}  // namespace latentmoe::ops::fp8
