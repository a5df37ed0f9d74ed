// rotary_embedding: reference, CPU kernels (one pass over x, angles read once per row),
// autograd (the backward is the inverse rotation) and dispatch.
#include "latentmoe/ops/rotary.h"

#include <ATen/Parallel.h>
#include <torch/autograd.h>
#include <torch/library.h>

#include "ops/cpu_kernel_util.h"
#include "ops/op_checks.h"
#include "ops/op_handle.h"

namespace latentmoe::ops {

namespace {
using cpu::from_float;
using cpu::to_float;

struct RowLayout {
  int64_t batch, heads, seq, half;
  int64_t stride_b, stride_h, stride_s, stride_r;  // of the strided side (x forward, dx backward)
  int64_t cos_batch;                                // 1 or batch
};

// Forward: strided x → contiguous half-layout out. Backward (kInverse): contiguous half-layout
// grad → strided-layout dx (contiguous itself), rotating by -angle.
template <typename T, bool kInverse>
LMOE_ALWAYS_INLINE void rotate_rows(const T* in, T* out, const float* cos, const float* sin, const RowLayout& l,
                                    bool interleaved, int64_t begin, int64_t end) {
  const int64_t rope = 2 * l.half;
  for (int64_t r = begin; r < end; ++r) {
    const int64_t s = r % l.seq, h = (r / l.seq) % l.heads, b = r / (l.seq * l.heads);
    const int64_t angle_row = ((l.cos_batch == 1 ? 0 : b) * l.seq + s) * l.half;
    const float* c = cos + angle_row;
    const float* sn = sin + angle_row;
    const int64_t first_step = interleaved ? 2 : 1, second_offset = interleaved ? 1 : l.half;
    if constexpr (!kInverse) {
      const T* x = in + b * l.stride_b + h * l.stride_h + s * l.stride_s;
      T* y = out + r * rope;
      for (int64_t i = 0; i < l.half; ++i) {
        const float x1 = to_float(x[i * first_step * l.stride_r]);
        const float x2 = to_float(x[(i * first_step + second_offset) * l.stride_r]);
        y[i] = from_float<T>(x1 * c[i] - x2 * sn[i]);
        y[i + l.half] = from_float<T>(x2 * c[i] + x1 * sn[i]);
      }
    } else {
      const T* g = in + r * rope;
      T* dx = out + r * rope;  // contiguous, in x's pair layout
      for (int64_t i = 0; i < l.half; ++i) {
        const float g1 = to_float(g[i]), g2 = to_float(g[i + l.half]);
        dx[i * first_step] = from_float<T>(g1 * c[i] + g2 * sn[i]);
        dx[i * first_step + second_offset] = from_float<T>(g2 * c[i] - g1 * sn[i]);
      }
    }
  }
}

#define LMOE_ROTARY_KERNELS(T, suffix)                                                                         \
  LMOE_CPU_CLONES void forward_##suffix(const T* in, T* out, const float* cos, const float* sin,                \
                                        const RowLayout& l, bool interleaved, int64_t begin, int64_t end) {     \
    rotate_rows<T, false>(in, out, cos, sin, l, interleaved, begin, end);                                       \
  }                                                                                                             \
  LMOE_CPU_CLONES void backward_##suffix(const T* in, T* out, const float* cos, const float* sin,               \
                                         const RowLayout& l, bool interleaved, int64_t begin, int64_t end) {    \
    rotate_rows<T, true>(in, out, cos, sin, l, interleaved, begin, end);                                        \
  }                                                                                                             \
  void run(const T* in, T* out, const float* cos, const float* sin, const RowLayout& l, bool interleaved,       \
           bool inverse, int64_t begin, int64_t end) {                                                          \
    if (inverse) {                                                                                              \
      backward_##suffix(in, out, cos, sin, l, interleaved, begin, end);                                         \
    } else {                                                                                                    \
      forward_##suffix(in, out, cos, sin, l, interleaved, begin, end);                                          \
    }                                                                                                           \
  }
LMOE_ROTARY_KERNELS(float, f32)
LMOE_ROTARY_KERNELS(c10::BFloat16, bf16)
LMOE_ROTARY_KERNELS(c10::Half, f16)
#undef LMOE_ROTARY_KERNELS

at::Tensor rotate_cpu(const at::Tensor& in, const at::Tensor& cos_in, const at::Tensor& sin_in, bool interleaved,
                      bool inverse) {
  const at::Tensor cos = cos_in.contiguous(), sin = sin_in.contiguous();
  const at::Tensor src = inverse ? in.contiguous() : in;  // the forward reads x through its strides
  at::Tensor out = at::empty(in.sizes(), in.options().memory_format(at::MemoryFormat::Contiguous));
  RowLayout l{in.size(0), in.size(1), in.size(2), in.size(3) / 2, src.stride(0), src.stride(1), src.stride(2),
              src.stride(3), cos.size(0)};
  const int64_t rows = l.batch * l.heads * l.seq;
  const auto body = [&](auto tag) {
    using T = decltype(tag);
    const T* ip = src.const_data_ptr<T>();
    T* op = out.mutable_data_ptr<T>();
    const float* cp = cos.const_data_ptr<float>();
    const float* sp = sin.const_data_ptr<float>();
    at::parallel_for(0, rows, cpu::row_grain(2 * l.half), [&](int64_t b, int64_t e) {
      run(ip, op, cp, sp, l, interleaved, inverse, b, e);
    });
  };
  cpu::dispatch_float_type(in.scalar_type(), "rotary_embedding", body);
  return out;
}

at::Tensor rotary_cpu(const at::Tensor& x, const at::Tensor& cos, const at::Tensor& sin, bool interleaved) {
  check_rotary_inputs(x, cos, sin);
  return rotate_cpu(x, cos, sin, interleaved, /*inverse=*/false);
}

at::Tensor rotary_backward_cpu(const at::Tensor& grad, const at::Tensor& cos, const at::Tensor& sin, bool interleaved) {
  check_rotary_inputs(grad, cos, sin);
  return rotate_cpu(grad, cos, sin, interleaved, /*inverse=*/true);
}

// Any device, in ATen ops.
at::Tensor rotary_backward_aten(const at::Tensor& grad, const at::Tensor& cos_in, const at::Tensor& sin_in,
                                bool interleaved) {
  check_rotary_inputs(grad, cos_in, sin_in);
  const int64_t half = grad.size(-1) / 2;
  const at::Tensor c = cos_in.unsqueeze(1), s = sin_in.unsqueeze(1);
  const at::Tensor g = grad.to(at::kFloat);
  const at::Tensor g1 = g.narrow(-1, 0, half), g2 = g.narrow(-1, half, half);
  const at::Tensor d1 = g1 * c + g2 * s, d2 = g2 * c - g1 * s;
  const at::Tensor dx = interleaved ? at::stack({d1, d2}, -1).flatten(-2) : at::cat({d1, d2}, -1);
  return dx.to(grad.scalar_type());
}

at::Tensor call_forward(const at::Tensor& x, const at::Tensor& cos, const at::Tensor& sin, bool interleaved) {
  using Signature = at::Tensor(const at::Tensor&, const at::Tensor&, const at::Tensor&, bool);
  static const auto op = find_op<Signature>("latentmoe::rotary_embedding");
  return op.call(x, cos, sin, interleaved);
}

at::Tensor call_backward(const at::Tensor& grad, const at::Tensor& cos, const at::Tensor& sin, bool interleaved) {
  using Signature = at::Tensor(const at::Tensor&, const at::Tensor&, const at::Tensor&, bool);
  static const auto op = find_op<Signature>("latentmoe::rotary_embedding_backward");
  return op.call(grad, cos, sin, interleaved);
}

class RotaryFunction : public torch::autograd::Function<RotaryFunction> {
 public:
  static at::Tensor forward(torch::autograd::AutogradContext* ctx, const at::Tensor& x, const at::Tensor& cos,
                            const at::Tensor& sin, bool interleaved) {
    at::AutoDispatchBelowADInplaceOrView below_autograd;
    ctx->save_for_backward({cos, sin});
    ctx->saved_data["interleaved"] = interleaved;
    return call_forward(x, cos, sin, interleaved);
  }
  static torch::autograd::tensor_list backward(torch::autograd::AutogradContext* ctx,
                                               torch::autograd::tensor_list grads) {
    const auto saved = ctx->get_saved_variables();
    const bool interleaved = ctx->saved_data["interleaved"].toBool();
    return {call_backward(grads[0], saved[0], saved[1], interleaved), at::Tensor(), at::Tensor(), at::Tensor()};
  }
};

at::Tensor rotary_autograd(const at::Tensor& x, const at::Tensor& cos, const at::Tensor& sin, bool interleaved) {
  return RotaryFunction::apply(x, cos, sin, interleaved);
}
}  // namespace

at::Tensor rotary_embedding_reference(const at::Tensor& x, const at::Tensor& cos_in, const at::Tensor& sin_in,
                                      bool interleaved) {
  check_rotary_inputs(x, cos_in, sin_in);
  const int64_t rope = x.size(-1), half = rope / 2;
  const at::Tensor x32 = x.to(at::kFloat);
  const at::Tensor first = interleaved ? x32.slice(-1, 0, rope, 2) : x32.narrow(-1, 0, half);
  const at::Tensor second = interleaved ? x32.slice(-1, 1, rope, 2) : x32.narrow(-1, half, half);
  const at::Tensor c = cos_in.unsqueeze(1), s = sin_in.unsqueeze(1);  // over heads
  return at::cat({first * c - second * s, second * c + first * s}, -1).to(x.scalar_type()).contiguous();
}

at::Tensor rotary_embedding(const at::Tensor& x, const at::Tensor& cos, const at::Tensor& sin, bool interleaved) {
  return call_forward(x, cos, sin, interleaved);
}

TORCH_LIBRARY_IMPL(latentmoe, CPU, m) {
  m.impl("rotary_embedding", &rotary_cpu);
  m.impl("rotary_embedding_backward", &rotary_backward_cpu);
}

TORCH_LIBRARY_IMPL(latentmoe, CompositeExplicitAutograd, m) {
  m.impl("rotary_embedding", &rotary_embedding_reference);
  m.impl("rotary_embedding_backward", &rotary_backward_aten);
}

TORCH_LIBRARY_IMPL(latentmoe, Autograd, m) { m.impl("rotary_embedding", &rotary_autograd); }

}  // namespace latentmoe::ops
