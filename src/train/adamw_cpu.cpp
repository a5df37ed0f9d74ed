// The fused AdamW update of adamw_cpu.h.
#include "latentmoe/train/adamw_cpu.h"

#include <ATen/Parallel.h>

#include "ops/cpu_vec.h"

namespace latentmoe::train {

namespace {
#if LMOE_HAVE_AVX512_KERNELS
LMOE_AVX512 void update_range(float* p, const float* g_in, float* m, float* v, int64_t begin, int64_t end,
                              const AdamWScalars& s) {
  namespace vx = ops::cpu::avx512;
  const __m512 zero = _mm512_setzero_ps(), scale = _mm512_set1_ps(s.grad_scale), decay = _mm512_set1_ps(s.decay_factor);
  const __m512 w1 = _mm512_set1_ps(s.one_minus_beta1), b2 = _mm512_set1_ps(s.beta2), w2 = _mm512_set1_ps(s.one_minus_beta2);
  const __m512 inv_bc2 = _mm512_set1_ps(s.inv_sqrt_bias_correction2), eps = _mm512_set1_ps(s.eps);
  const __m512 step = _mm512_set1_ps(s.neg_step_size);
  for (int64_t i = begin; i < end; i += 16) {
    const __mmask16 k = vx::first_lanes(end - i);
    const __m512 g = _mm512_mul_ps(vx::load(g_in + i, k, zero), scale);
    const __m512 param = _mm512_mul_ps(vx::load(p + i, k, zero), decay);
    __m512 mean = vx::load(m + i, k, zero);
    mean = _mm512_fmadd_ps(_mm512_sub_ps(g, mean), w1, mean);
    const __m512 var = _mm512_fmadd_ps(_mm512_mul_ps(g, g), w2, _mm512_mul_ps(vx::load(v + i, k, zero), b2));
    const __m512 denom = _mm512_fmadd_ps(_mm512_sqrt_ps(var), inv_bc2, eps);
    vx::store(p + i, k, _mm512_fmadd_ps(_mm512_div_ps(mean, denom), step, param));
    vx::store(m + i, k, mean);
    vx::store(v + i, k, var);
  }
}

LMOE_AVX512 double squared_norm_range(const float* x, int64_t n) {
  __m512d low = _mm512_setzero_pd(), high = _mm512_setzero_pd();
  for (int64_t i = 0; i < n; i += 16) {
    const __m512 v = ops::cpu::avx512::load(x + i, ops::cpu::avx512::first_lanes(n - i), _mm512_setzero_ps());
    const __m512d a = _mm512_cvtps_pd(_mm512_castps512_ps256(v));
    const __m512d b = _mm512_cvtps_pd(_mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(v), 1)));
    low = _mm512_fmadd_pd(a, a, low);
    high = _mm512_fmadd_pd(b, b, high);
  }
  return _mm512_reduce_add_pd(_mm512_add_pd(low, high));
}
#endif

// Elements per task of at::parallel_for (where a task's range ends changes no element's result).
constexpr int64_t kGrain = 1 << 15;
}  // namespace

bool adamw_cpu_applies(const torch::Tensor& param, const torch::Tensor& grad, const torch::Tensor& exp_avg,
                       const torch::Tensor& exp_avg_sq) {
  if (!ops::cpu::has_avx512()) return false;
  for (const auto* t : {&param, &grad, &exp_avg, &exp_avg_sq}) {
    if (!t->device().is_cpu() || !t->is_contiguous() || t->scalar_type() != torch::kFloat) return false;
  }
  return true;
}

void adamw_cpu_update(torch::Tensor& param, const torch::Tensor& grad, torch::Tensor& exp_avg,
                      torch::Tensor& exp_avg_sq, const AdamWScalars& s) {
  TORCH_CHECK(adamw_cpu_applies(param, grad, exp_avg, exp_avg_sq), "adamw_cpu_update: unsupported tensors");
  const int64_t n = param.numel();
  TORCH_CHECK(grad.numel() == n && exp_avg.numel() == n && exp_avg_sq.numel() == n,
              "adamw_cpu_update: parameter, gradient and moments differ in length");
#if LMOE_HAVE_AVX512_KERNELS
  float* p = param.mutable_data_ptr<float>();
  float* m = exp_avg.mutable_data_ptr<float>();
  float* v = exp_avg_sq.mutable_data_ptr<float>();
  const float* g = grad.const_data_ptr<float>();
  at::parallel_for(0, n, kGrain, [&](int64_t b, int64_t e) { update_range(p, g, m, v, b, e, s); });
#endif
}

bool squared_norm_cpu_applies(const torch::Tensor& t) {
  return ops::cpu::has_avx512() && t.device().is_cpu() && t.is_contiguous() && t.scalar_type() == torch::kFloat;
}

double squared_norm_cpu(const torch::Tensor& t) {
  TORCH_CHECK(squared_norm_cpu_applies(t), "squared_norm_cpu: needs a contiguous fp32 CPU tensor and AVX-512");
#if LMOE_HAVE_AVX512_KERNELS
  return squared_norm_range(t.const_data_ptr<float>(), t.numel());
#else
  return 0.0;
#endif
}

}  // namespace latentmoe::train
