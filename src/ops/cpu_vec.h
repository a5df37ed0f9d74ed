// AVX-512 helpers for the CPU kernels' hot loops: 16 fp32 lanes loaded from and stored to fp32 or
// bf16 rows (a masked tail, so no scalar remainder), and exp. GCC auto-vectorizes the plain loops
// poorly (measured in cross_entropy_rows: scalar compares in the max pass, 4-lane exp), so the
// kernels that dominate a step have an AVX-512 body picked at run time (`has_avx512()`), with the
// portable loops (cpu_kernel_util.h) on other CPUs. Every function here carries the target
// attribute, so it inlines only into kernels compiled for AVX-512.
#pragma once

#include <c10/util/BFloat16.h>

#include <cstdint>

#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__) && !defined(__SANITIZE_ADDRESS__)
// GCC 12's AVX-512 headers start some intrinsics from _mm512_undefined_*(), which it then reports
// as uninitialized where they are inlined (a known false positive).
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#pragma GCC diagnostic ignored "-Wuninitialized"
#include <immintrin.h>
#define LMOE_HAVE_AVX512_KERNELS 1
#define LMOE_AVX512 __attribute__((target("avx512f,avx512bw,avx512vl,avx512dq,avx2,fma")))
#else
#define LMOE_HAVE_AVX512_KERNELS 0
#endif

namespace latentmoe::ops::cpu {

inline bool has_avx512() {
#if LMOE_HAVE_AVX512_KERNELS
  static const bool supported = __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
                                __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512dq");
  return supported;
#else
  return false;
#endif
}

#if LMOE_HAVE_AVX512_KERNELS
namespace avx512 {

// Lanes [0, n) of 16 set (n <= 16).
LMOE_AVX512 inline __mmask16 first_lanes(int64_t n) {
  return n >= 16 ? static_cast<__mmask16>(0xffff) : static_cast<__mmask16>((1u << n) - 1u);
}

// Masked-off lanes read as `fill`.
LMOE_AVX512 inline __m512 load(const float* p, __mmask16 m, __m512 fill) { return _mm512_mask_loadu_ps(fill, m, p); }
LMOE_AVX512 inline __m512 load(const c10::BFloat16* p, __mmask16 m, __m512 fill) {
  const __m256i h = _mm256_maskz_loadu_epi16(m, p);
  const __m512 v = _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16));
  return _mm512_mask_blend_ps(m, fill, v);
}

LMOE_AVX512 inline void store(float* p, __mmask16 m, __m512 v) { _mm512_mask_storeu_ps(p, m, v); }
// Round to nearest even as from_float<BFloat16>; a NaN keeps its upper bits plus the quiet bit.
LMOE_AVX512 inline void store(c10::BFloat16* p, __mmask16 m, __m512 v) {
  const __m512i bits = _mm512_castps_si512(v);
  const __m512i odd = _mm512_and_si512(_mm512_srli_epi32(bits, 16), _mm512_set1_epi32(1));
  const __m512i rounded = _mm512_srli_epi32(_mm512_add_epi32(bits, _mm512_add_epi32(odd, _mm512_set1_epi32(0x7fff))), 16);
  const __mmask16 nan = _mm512_cmp_ps_mask(v, v, _CMP_UNORD_Q);
  const __m512i quiet = _mm512_or_si512(_mm512_srli_epi32(bits, 16), _mm512_set1_epi32(0x40));
  _mm256_mask_storeu_epi16(p, m, _mm512_cvtepi32_epi16(_mm512_mask_blend_epi32(nan, rounded, quiet)));
}

// fast_exp's polynomial, clamping and rounding on 16 lanes (NaN stays NaN).
LMOE_AVX512 inline __m512 exp(__m512 x) {
  const __mmask16 nan = _mm512_cmp_ps_mask(x, x, _CMP_UNORD_Q);  // min/max below would drop a NaN
  x = _mm512_max_ps(_mm512_min_ps(x, _mm512_set1_ps(88.0f)), _mm512_set1_ps(-87.0f));
  const __m512 round = _mm512_set1_ps(12582912.0f);
  const __m512 n = _mm512_sub_ps(_mm512_fmadd_ps(x, _mm512_set1_ps(1.44269504088896341f), round), round);
  __m512 f = _mm512_fnmadd_ps(n, _mm512_set1_ps(0.693359375f), x);
  f = _mm512_fnmadd_ps(n, _mm512_set1_ps(-2.12194440e-4f), f);
  __m512 p = _mm512_set1_ps(1.9875691500e-4f);
  p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(1.3981999507e-3f));
  p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(8.3334519073e-3f));
  p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(4.1665795894e-2f));
  p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(1.6666665459e-1f));
  p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(5.0000001201e-1f));
  p = _mm512_add_ps(_mm512_fmadd_ps(_mm512_mul_ps(p, f), f, f), _mm512_set1_ps(1.0f));
  const __m512i exponent = _mm512_slli_epi32(_mm512_add_epi32(_mm512_cvtps_epi32(n), _mm512_set1_epi32(127)), 23);
  return _mm512_mask_blend_ps(nan, _mm512_mul_ps(p, _mm512_castsi512_ps(exponent)), x);
}

}  // namespace avx512
#endif

}  // namespace latentmoe::ops::cpu
