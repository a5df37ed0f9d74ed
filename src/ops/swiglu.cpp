// swiglu: reference, CPU kernels (elementwise, fp32 math, one rounding), autograd and dispatch.
#include "latentmoe/ops/swiglu.h"

#include <ATen/Parallel.h>
#include <torch/autograd.h>
#include <torch/library.h>

#include <cmath>

#include "ops/cpu_kernel_util.h"
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

#define LMOE_SWIGLU_KERNELS(T, suffix)                                                                             \
  LMOE_CPU_CLONES void forward_##suffix(const T* gate, const T* up, T* out, int64_t begin, int64_t end) {            \
    forward_range(gate, up, out, begin, end);                                                                        \
  }                                                                                                                  \
  LMOE_CPU_CLONES void backward_##suffix(const T* grad, const T* gate, const T* up, T* dgate, T* dup, int64_t begin, \
                                         int64_t end) {                                                              \
    backward_range(grad, gate, up, dgate, dup, begin, end);                                                          \
  }                                                                                                                  \
  void run_forward(const T* gate, const T* up, T* out, int64_t begin, int64_t end) {                                 \
    forward_##suffix(gate, up, out, begin, end);                                                                     \
  }                                                                                                                  \
  void run_backward(const T* grad, const T* gate, const T* up, T* dgate, T* dup, int64_t begin, int64_t end) {       \
    backward_##suffix(grad, gate, up, dgate, dup, begin, end);                                                       \
  }
LMOE_SWIGLU_KERNELS(float, f32)
LMOE_SWIGLU_KERNELS(c10::BFloat16, bf16)
LMOE_SWIGLU_KERNELS(c10::Half, f16)
#undef LMOE_SWIGLU_KERNELS

template <typename Fn>
void dispatch_dtype(at::ScalarType type, Fn&& fn) {
  switch (type) {
    case at::kFloat: return fn(float{});
    case at::kBFloat16: return fn(c10::BFloat16{});
    case at::kHalf: return fn(c10::Half{});
    default: TORCH_CHECK(false, "swiglu: unsupported dtype ", type);
  }
}

at::Tensor swiglu_cpu(const at::Tensor& gate_in, const at::Tensor& up_in) {
  check_swiglu_inputs(gate_in, up_in);
  const at::Tensor gate = gate_in.contiguous(), up = up_in.contiguous();
  at::Tensor out = at::empty_like(gate);
  dispatch_dtype(gate.scalar_type(), [&](auto tag) {
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
  dispatch_dtype(gate.scalar_type(), [&](auto tag) {
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
}  // namespace

at::Tensor swiglu_reference(const at::Tensor& gate, const at::Tensor& up) {
  check_swiglu_inputs(gate, up);
  return (at::silu(gate.to(at::kFloat)) * up.to(at::kFloat)).to(gate.scalar_type());
}

at::Tensor swiglu(const at::Tensor& gate, const at::Tensor& up) { return call_swiglu(gate, up); }

TORCH_LIBRARY_IMPL(latentmoe, CPU, m) {
  m.impl("swiglu", &swiglu_cpu);
  m.impl("swiglu_backward", &swiglu_backward_cpu);
}

TORCH_LIBRARY_IMPL(latentmoe, CompositeExplicitAutograd, m) {
  m.impl("swiglu", &swiglu_reference);
  m.impl("swiglu_backward", &swiglu_backward_aten);
}

TORCH_LIBRARY_IMPL(latentmoe, Autograd, m) { m.impl("swiglu", &swiglu_autograd); }

}  // namespace latentmoe::ops
