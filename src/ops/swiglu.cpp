// swiglu: reference, CPU kernels (elementwise, fp32 math, one rounding), autograd and dispatch.
#include "latentmoe/ops/swiglu.h"

#include <ATen/Parallel.h>
#include <torch/autograd.h>
#include <torch/library.h>

#include <cmath>
#include <type_traits>

#include "ops/cpu_kernel_util.h"
#include "ops/cpu_vec.h"
#include "ops/op_checks.h"
#include "ops/op_handle.h"

namespace latentmoe::ops {

namespace {
using cpu::from_float;
using cpu::to_float;

constexpr int64_t kGrain = 16384;

template <typename T>
LMOE_ALWAYS_INLINE void forward_range(const T* gate, const T* up, T* out, int64_t begin, int64_t end) {
  for (int64_t i = begin; i < end; ++i) {
    const float g = to_float(gate[i]);
    out[i] = from_float<T>(g / (1.0f + cpu::fast_exp(-g)) * to_float(up[i]));
  }
}

// d/dg silu(g) = s * (1 + g * (1 - s)) with s = sigmoid(g).
template <typename T>
LMOE_ALWAYS_INLINE void backward_range(const T* grad, const T* gate, const T* up, T* dgate, T* dup, int64_t begin,
                                       int64_t end) {
  for (int64_t i = begin; i < end; ++i) {
    const float g = to_float(gate[i]), u = to_float(up[i]), d = to_float(grad[i]);
    const float s = 1.0f / (1.0f + cpu::fast_exp(-g));
    dgate[i] = from_float<T>(d * u * s * (1.0f + g * (1.0f - s)));
    dup[i] = from_float<T>(d * g * s);
  }
}

#if LMOE_HAVE_AVX512_KERNELS
// forward_range and backward_range in AVX-512 (the same formulas; a masked tail).
template <typename T>
LMOE_AVX512 void forward_avx512(const T* gate, const T* up, T* out, int64_t begin, int64_t end) {
  namespace vx = cpu::avx512;
  const __m512 zero = _mm512_setzero_ps(), one = _mm512_set1_ps(1.0f);
  for (int64_t i = begin; i < end; i += 16) {
    const __mmask16 m = vx::first_lanes(end - i);
    const __m512 g = vx::load(gate + i, m, zero);
    const __m512 silu = _mm512_div_ps(g, _mm512_add_ps(one, vx::exp(_mm512_sub_ps(zero, g))));
    vx::store(out + i, m, _mm512_mul_ps(silu, vx::load(up + i, m, zero)));
  }
}

template <typename T>
LMOE_AVX512 void backward_avx512(const T* grad, const T* gate, const T* up, T* dgate, T* dup, int64_t begin,
                                 int64_t end) {
  namespace vx = cpu::avx512;
  const __m512 zero = _mm512_setzero_ps(), one = _mm512_set1_ps(1.0f);
  for (int64_t i = begin; i < end; i += 16) {
    const __mmask16 m = vx::first_lanes(end - i);
    const __m512 g = vx::load(gate + i, m, zero), u = vx::load(up + i, m, zero), d = vx::load(grad + i, m, zero);
    const __m512 s = _mm512_div_ps(one, _mm512_add_ps(one, vx::exp(_mm512_sub_ps(zero, g))));
    const __m512 ds = _mm512_mul_ps(_mm512_mul_ps(d, u), s);
    vx::store(dgate + i, m, _mm512_mul_ps(ds, _mm512_add_ps(one, _mm512_mul_ps(g, _mm512_sub_ps(one, s)))));
    vx::store(dup + i, m, _mm512_mul_ps(_mm512_mul_ps(d, g), s));
  }
}
#endif

// AVX-512 where the CPU has it (fp32, bf16), else the clones of the portable loops.
template <typename T, typename Portable>
LMOE_ALWAYS_INLINE void forward_on_best(Portable portable, const T* gate, const T* up, T* out, int64_t begin,
                                        int64_t end) {
#if LMOE_HAVE_AVX512_KERNELS
  if constexpr (!std::is_same_v<T, c10::Half>) {
    if (cpu::has_avx512()) return forward_avx512(gate, up, out, begin, end);
  }
#endif
  portable(gate, up, out, begin, end);
}

template <typename T, typename Portable>
LMOE_ALWAYS_INLINE void backward_on_best(Portable portable, const T* grad, const T* gate, const T* up, T* dgate,
                                         T* dup, int64_t begin, int64_t end) {
#if LMOE_HAVE_AVX512_KERNELS
  if constexpr (!std::is_same_v<T, c10::Half>) {
    if (cpu::has_avx512()) return backward_avx512(grad, gate, up, dgate, dup, begin, end);
  }
#endif
  portable(grad, gate, up, dgate, dup, begin, end);
}

#define LMOE_SWIGLU_KERNELS(T, suffix)                                                                             \
  LMOE_CPU_CLONES void forward_##suffix(const T* gate, const T* up, T* out, int64_t begin, int64_t end) {            \
    forward_range(gate, up, out, begin, end);                                                                        \
  }                                                                                                                  \
  LMOE_CPU_CLONES void backward_##suffix(const T* grad, const T* gate, const T* up, T* dgate, T* dup, int64_t begin, \
                                         int64_t end) {                                                              \
    backward_range(grad, gate, up, dgate, dup, begin, end);                                                          \
  }                                                                                                                  \
  void run_forward(const T* gate, const T* up, T* out, int64_t begin, int64_t end) {                                 \
    forward_on_best(forward_##suffix, gate, up, out, begin, end);                                                    \
  }                                                                                                                  \
  void run_backward(const T* grad, const T* gate, const T* up, T* dgate, T* dup, int64_t begin, int64_t end) {       \
    backward_on_best(backward_##suffix, grad, gate, up, dgate, dup, begin, end);                                     \
  }
LMOE_SWIGLU_KERNELS(float, f32)
LMOE_SWIGLU_KERNELS(c10::BFloat16, bf16)
LMOE_SWIGLU_KERNELS(c10::Half, f16)
#undef LMOE_SWIGLU_KERNELS

at::Tensor swiglu_cpu(const at::Tensor& gate_in, const at::Tensor& up_in) {
  check_swiglu_inputs(gate_in, up_in);
  const at::Tensor gate = gate_in.contiguous(), up = up_in.contiguous();
  at::Tensor out = at::empty_like(gate);
  cpu::dispatch_float_type(gate.scalar_type(), "swiglu", [&](auto tag) {
    using T = decltype(tag);
    const T* gp = gate.const_data_ptr<T>();
    const T* up_p = up.const_data_ptr<T>();
    T* op = out.mutable_data_ptr<T>();
    at::parallel_for(0, gate.numel(), kGrain, [&](int64_t b, int64_t e) { run_forward(gp, up_p, op, b, e); });
  });
  return out;
}

std::tuple<at::Tensor, at::Tensor> swiglu_backward_cpu(const at::Tensor& grad_in, const at::Tensor& gate_in,
                                                       const at::Tensor& up_in) {
  check_swiglu_inputs(gate_in, up_in);
  TORCH_CHECK(grad_in.sizes() == gate_in.sizes(), "swiglu_backward: grad ", grad_in.sizes(), " does not match ",
              gate_in.sizes());
  const at::Tensor gate = gate_in.contiguous(), up = up_in.contiguous();
  const at::Tensor grad = grad_in.to(gate.scalar_type()).contiguous();
  at::Tensor dgate = at::empty_like(gate), dup = at::empty_like(up);
  cpu::dispatch_float_type(gate.scalar_type(), "swiglu", [&](auto tag) {
    using T = decltype(tag);
    const T* dp = grad.const_data_ptr<T>();
    const T* gp = gate.const_data_ptr<T>();
    const T* up_p = up.const_data_ptr<T>();
    T* dgp = dgate.mutable_data_ptr<T>();
    T* dup_p = dup.mutable_data_ptr<T>();
    at::parallel_for(0, gate.numel(), kGrain,
                     [&](int64_t b, int64_t e) { run_backward(dp, gp, up_p, dgp, dup_p, b, e); });
  });
  return {dgate, dup};
}

// Any device, in ATen ops (the path for a device without its own kernel yet).
std::tuple<at::Tensor, at::Tensor> swiglu_backward_aten(const at::Tensor& grad, const at::Tensor& gate,
                                                        const at::Tensor& up) {
  check_swiglu_inputs(gate, up);
  const at::Tensor d = grad.to(at::kFloat), g = gate.to(at::kFloat), u = up.to(at::kFloat);
  const at::Tensor s = at::sigmoid(g);
  return {(d * u * s * (1 + g * (1 - s))).to(gate.scalar_type()), (d * g * s).to(up.scalar_type())};
}

void check_packed(const at::Tensor& gate_up) {
  TORCH_CHECK(gate_up.dim() >= 1 && gate_up.size(-1) % 2 == 0,
              "swiglu_packed: the last dimension holds gate then up and must be even, got ", gate_up.sizes());
  TORCH_CHECK(is_supported_float(gate_up.scalar_type()), "swiglu_packed: input must be float32, bfloat16 or float16, got ",
              gate_up.scalar_type());
}

// Each row is [gate | up] (one GEMM's output for both projections); rows are independent.
at::Tensor swiglu_packed_cpu(const at::Tensor& gate_up_in) {
  check_packed(gate_up_in);
  const at::Tensor gate_up = gate_up_in.contiguous();
  const int64_t width = gate_up.size(-1) / 2, rows = width == 0 ? 0 : gate_up.numel() / (2 * width);
  std::vector<int64_t> out_sizes = gate_up.sizes().vec();
  out_sizes.back() = width;
  at::Tensor out = at::empty(out_sizes, gate_up.options());
  cpu::dispatch_float_type(gate_up.scalar_type(), "swiglu", [&](auto tag) {
    using T = decltype(tag);
    const T* in = gate_up.const_data_ptr<T>();
    T* op = out.mutable_data_ptr<T>();
    at::parallel_for(0, rows, std::max<int64_t>(1, kGrain / std::max<int64_t>(1, width)), [&](int64_t b, int64_t e) {
      for (int64_t r = b; r < e; ++r) run_forward(in + 2 * r * width, in + (2 * r + 1) * width, op + r * width, 0, width);
    });
  });
  return out;
}

at::Tensor swiglu_packed_backward_cpu(const at::Tensor& grad_in, const at::Tensor& gate_up_in) {
  check_packed(gate_up_in);
  const at::Tensor gate_up = gate_up_in.contiguous();
  const int64_t width = gate_up.size(-1) / 2, rows = width == 0 ? 0 : gate_up.numel() / (2 * width);
  TORCH_CHECK(grad_in.numel() == rows * width, "swiglu_packed_backward: grad ", grad_in.sizes(),
              " does not match the input ", gate_up.sizes());
  const at::Tensor grad = grad_in.to(gate_up.scalar_type()).contiguous();
  at::Tensor dgate_up = at::empty_like(gate_up);
  cpu::dispatch_float_type(gate_up.scalar_type(), "swiglu", [&](auto tag) {
    using T = decltype(tag);
    const T* dp = grad.const_data_ptr<T>();
    const T* in = gate_up.const_data_ptr<T>();
    T* dout = dgate_up.mutable_data_ptr<T>();
    at::parallel_for(0, rows, std::max<int64_t>(1, kGrain / std::max<int64_t>(1, width)), [&](int64_t b, int64_t e) {
      for (int64_t r = b; r < e; ++r) {
        run_backward(dp + r * width, in + 2 * r * width, in + (2 * r + 1) * width, dout + 2 * r * width,
                     dout + (2 * r + 1) * width, 0, width);
      }
    });
  });
  return dgate_up;
}

at::Tensor swiglu_packed_backward_aten(const at::Tensor& grad, const at::Tensor& gate_up) {
  check_packed(gate_up);
  const auto halves = gate_up.chunk(2, -1);
  auto [dgate, dup] = swiglu_backward_aten(grad, halves[0], halves[1]);
  return at::cat({dgate, dup}, -1);
}

at::Tensor call_swiglu(const at::Tensor& gate, const at::Tensor& up) {
  static const auto op = find_op<at::Tensor(const at::Tensor&, const at::Tensor&)>("latentmoe::swiglu");
  return op.call(gate, up);
}

std::tuple<at::Tensor, at::Tensor> call_backward(const at::Tensor& grad, const at::Tensor& gate, const at::Tensor& up) {
  using Signature = std::tuple<at::Tensor, at::Tensor>(const at::Tensor&, const at::Tensor&, const at::Tensor&);
  static const auto op = find_op<Signature>("latentmoe::swiglu_backward");
  return op.call(grad, gate, up);
}

class SwiGluFunction : public torch::autograd::Function<SwiGluFunction> {
 public:
  static at::Tensor forward(torch::autograd::AutogradContext* ctx, const at::Tensor& gate, const at::Tensor& up) {
    at::AutoDispatchBelowADInplaceOrView below_autograd;
    ctx->save_for_backward({gate, up});
    return call_swiglu(gate, up);
  }
  static torch::autograd::tensor_list backward(torch::autograd::AutogradContext* ctx,
                                               torch::autograd::tensor_list grads) {
    const auto saved = ctx->get_saved_variables();
    auto [dgate, dup] = call_backward(grads[0], saved[0], saved[1]);
    return {dgate, dup};
  }
};

at::Tensor swiglu_autograd(const at::Tensor& gate, const at::Tensor& up) { return SwiGluFunction::apply(gate, up); }

at::Tensor call_swiglu_packed(const at::Tensor& gate_up) {
  static const auto op = find_op<at::Tensor(const at::Tensor&)>("latentmoe::swiglu_packed");
  return op.call(gate_up);
}

class SwiGluPackedFunction : public torch::autograd::Function<SwiGluPackedFunction> {
 public:
  static at::Tensor forward(torch::autograd::AutogradContext* ctx, const at::Tensor& gate_up) {
    at::AutoDispatchBelowADInplaceOrView below_autograd;
    ctx->save_for_backward({gate_up});
    return call_swiglu_packed(gate_up);
  }
  static torch::autograd::tensor_list backward(torch::autograd::AutogradContext* ctx,
                                               torch::autograd::tensor_list grads) {
    static const auto op = find_op<at::Tensor(const at::Tensor&, const at::Tensor&)>("latentmoe::swiglu_packed_backward");
    return {op.call(grads[0], ctx->get_saved_variables()[0])};
  }
};

at::Tensor swiglu_packed_autograd(const at::Tensor& gate_up) { return SwiGluPackedFunction::apply(gate_up); }
}  // namespace

at::Tensor swiglu_reference(const at::Tensor& gate, const at::Tensor& up) {
  check_swiglu_inputs(gate, up);
  return (at::silu(gate.to(at::kFloat)) * up.to(at::kFloat)).to(gate.scalar_type());
}

at::Tensor swiglu(const at::Tensor& gate, const at::Tensor& up) { return call_swiglu(gate, up); }

at::Tensor swiglu_packed_reference(const at::Tensor& gate_up) {
  check_packed(gate_up);
  const auto halves = gate_up.chunk(2, -1);
  return (at::silu(halves[0].to(at::kFloat)) * halves[1].to(at::kFloat)).to(gate_up.scalar_type());
}

at::Tensor swiglu_packed(const at::Tensor& gate_up) { return call_swiglu_packed(gate_up); }

TORCH_LIBRARY_IMPL(latentmoe, CPU, m) {
  m.impl("swiglu", &swiglu_cpu);
  m.impl("swiglu_backward", &swiglu_backward_cpu);
  m.impl("swiglu_packed", &swiglu_packed_cpu);
  m.impl("swiglu_packed_backward", &swiglu_packed_backward_cpu);
}

TORCH_LIBRARY_IMPL(latentmoe, CompositeExplicitAutograd, m) {
  m.impl("swiglu", &swiglu_reference);
  m.impl("swiglu_backward", &swiglu_backward_aten);
  m.impl("swiglu_packed", &swiglu_packed_reference);
  m.impl("swiglu_packed_backward", &swiglu_packed_backward_aten);
}

TORCH_LIBRARY_IMPL(latentmoe, Autograd, m) {
  m.impl("swiglu", &swiglu_autograd);
  m.impl("swiglu_packed", &swiglu_packed_autograd);
}

}  // namespace latentmoe::ops
