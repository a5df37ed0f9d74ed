// rms_norm: reference, CPU kernels (one pass forward, one pass backward), autograd and dispatch.
#include "latentmoe/ops/rms_norm.h"

#include <ATen/Dispatch.h>
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

// ---- CPU kernels ------------------------------------------------------------------------------
// Eight independent fp32 partial sums per row: vectorizes without reassociating, and the order of
// additions is fixed (results do not depend on the thread count).
template <typename T>
LMOE_ALWAYS_INLINE float sum_of_squares(const T* x, int64_t dim) {
  float lanes[8] = {0, 0, 0, 0, 0, 0, 0, 0};
  int64_t i = 0;
  for (; i + 8 <= dim; i += 8) {
    for (int l = 0; l < 8; ++l) {
      const float v = to_float(x[i + l]);
      lanes[l] += v * v;
    }
  }
  float total = 0;
  for (; i < dim; ++i) total += to_float(x[i]) * to_float(x[i]);
  for (float v : lanes) total += v;
  return total;
}

template <typename T, typename W>
LMOE_ALWAYS_INLINE void forward_rows(const T* x, const W* w, T* y, float* inv_rms, int64_t dim, float eps,
                                     int64_t begin, int64_t end) {
  for (int64_t r = begin; r < end; ++r) {
    const T* xr = x + r * dim;
    T* yr = y + r * dim;
    const float inv = 1.0f / std::sqrt(sum_of_squares(xr, dim) / static_cast<float>(dim) + eps);
    inv_rms[r] = inv;
    for (int64_t i = 0; i < dim; ++i) yr[i] = from_float<T>(to_float(xr[i]) * inv * to_float(w[i]));
  }
}

// dx = inv*w*g - x * inv^3 * sum(g*w*x)/dim; the weight gradient of these rows accumulates into
// dw_partial (fp32, one row of partials per block of rows).
template <typename T, typename W>
LMOE_ALWAYS_INLINE void backward_rows(const T* g, const T* x, const W* w, const float* inv_rms, T* dx, float* dw_partial,
                                      int64_t dim, int64_t begin, int64_t end) {
  for (int64_t r = begin; r < end; ++r) {
    const T* gr = g + r * dim;
    const T* xr = x + r * dim;
    T* dxr = dx + r * dim;
    const float inv = inv_rms[r];
    float lanes[8] = {0, 0, 0, 0, 0, 0, 0, 0};
    int64_t i = 0;
    for (; i + 8 <= dim; i += 8) {
      for (int l = 0; l < 8; ++l) lanes[l] += to_float(gr[i + l]) * to_float(w[i + l]) * to_float(xr[i + l]);
    }
    float dot = 0;
    for (; i < dim; ++i) dot += to_float(gr[i]) * to_float(w[i]) * to_float(xr[i]);
    for (float v : lanes) dot += v;
    const float coef = dot * inv * inv * inv / static_cast<float>(dim);
    for (int64_t j = 0; j < dim; ++j) {
      const float gj = to_float(gr[j]), xj = to_float(xr[j]);
      dxr[j] = from_float<T>(inv * to_float(w[j]) * gj - xj * coef);
      dw_partial[j] += gj * xj * inv;
    }
  }
}

// One compiled clone per CPU level for each dtype pair (target_clones cannot wrap templates or
// the lambdas at::parallel_for runs).
#define LMOE_RMS_NORM_ROW_KERNELS(T, W, suffix)                                                               \
  LMOE_CPU_CLONES void forward_rows_##suffix(const T* x, const W* w, T* y, float* inv_rms, int64_t dim,         \
                                             float eps, int64_t begin, int64_t end) {                           \
    forward_rows(x, w, y, inv_rms, dim, eps, begin, end);                                                       \
  }                                                                                                             \
  LMOE_CPU_CLONES void backward_rows_##suffix(const T* g, const T* x, const W* w, const float* inv_rms, T* dx,  \
                                              float* dw_partial, int64_t dim, int64_t begin, int64_t end) {     \
    backward_rows(g, x, w, inv_rms, dx, dw_partial, dim, begin, end);                                           \
  }                                                                                                             \
  void run_forward(const T* x, const W* w, T* y, float* inv_rms, int64_t dim, float eps, int64_t begin,         \
                   int64_t end) {                                                                               \
    forward_rows_##suffix(x, w, y, inv_rms, dim, eps, begin, end);                                              \
  }                                                                                                             \
  void run_backward(const T* g, const T* x, const W* w, const float* inv_rms, T* dx, float* dw_partial,         \
                    int64_t dim, int64_t begin, int64_t end) {                                                  \
    backward_rows_##suffix(g, x, w, inv_rms, dx, dw_partial, dim, begin, end);                                  \
  }
LMOE_RMS_NORM_ROW_KERNELS(float, float, f32_f32)
LMOE_RMS_NORM_ROW_KERNELS(c10::BFloat16, float, bf16_f32)
LMOE_RMS_NORM_ROW_KERNELS(c10::BFloat16, c10::BFloat16, bf16_bf16)
LMOE_RMS_NORM_ROW_KERNELS(c10::Half, float, f16_f32)
LMOE_RMS_NORM_ROW_KERNELS(c10::Half, c10::Half, f16_f16)
#undef LMOE_RMS_NORM_ROW_KERNELS

// Dispatches on (x dtype, weight dtype): weight is fp32 or x's dtype (checked).
template <typename Fn>
void dispatch_dtypes(const at::Tensor& x, const at::Tensor& weight, Fn&& fn) {
  const bool fp32_weight = weight.scalar_type() == at::kFloat;
  switch (x.scalar_type()) {
    case at::kFloat: return fn(float{}, float{});
    case at::kBFloat16:
      return fp32_weight ? fn(c10::BFloat16{}, float{}) : fn(c10::BFloat16{}, c10::BFloat16{});
    case at::kHalf: return fp32_weight ? fn(c10::Half{}, float{}) : fn(c10::Half{}, c10::Half{});
    default: TORCH_CHECK(false, "rms_norm: unsupported dtype ", x.scalar_type());
  }
}

std::tuple<at::Tensor, at::Tensor> rms_norm_forward_cpu(const at::Tensor& x_in, const at::Tensor& weight_in,
                                                        double eps) {
  check_rms_norm_inputs(x_in, weight_in);
  const at::Tensor x = x_in.contiguous(), weight = weight_in.contiguous();
  const int64_t dim = x.size(-1), rows = dim == 0 ? 0 : x.numel() / dim;
  at::Tensor y = at::empty_like(x);
  at::Tensor inv_rms = at::empty(x.sizes().slice(0, x.dim() - 1), x.options().dtype(at::kFloat));
  dispatch_dtypes(x, weight, [&](auto t, auto w) {
    using T = decltype(t);
    using W = decltype(w);
    const T* xp = x.const_data_ptr<T>();
    const W* wp = weight.const_data_ptr<W>();
    T* yp = y.mutable_data_ptr<T>();
    float* ip = inv_rms.mutable_data_ptr<float>();
    at::parallel_for(0, rows, cpu::row_grain(dim), [&](int64_t begin, int64_t end) {
      run_forward(xp, wp, yp, ip, dim, static_cast<float>(eps), begin, end);
    });
  });
  return {y, inv_rms};
}

at::Tensor rms_norm_cpu(const at::Tensor& x, const at::Tensor& weight, double eps) {
  return std::get<0>(rms_norm_forward_cpu(x, weight, eps));
}

std::tuple<at::Tensor, at::Tensor> rms_norm_backward_cpu(const at::Tensor& grad_in, const at::Tensor& x_in,
                                                         const at::Tensor& weight_in, const at::Tensor& inv_rms_in) {
  check_rms_norm_inputs(x_in, weight_in);
  TORCH_CHECK(grad_in.sizes() == x_in.sizes(), "rms_norm_backward: grad ", grad_in.sizes(), " does not match x ",
              x_in.sizes());
  const at::Tensor x = x_in.contiguous(), weight = weight_in.contiguous();
  const at::Tensor grad = grad_in.to(x.scalar_type()).contiguous();
  const at::Tensor inv_rms = inv_rms_in.to(at::kFloat).contiguous();
  const int64_t dim = x.size(-1), rows = dim == 0 ? 0 : x.numel() / dim;
  TORCH_CHECK(inv_rms.numel() == rows, "rms_norm_backward: inv_rms has ", inv_rms.numel(), " values for ", rows, " rows");
  at::Tensor dx = at::empty_like(x);
  // Rows are split into fixed blocks (not per thread), each with its own fp32 weight-gradient row,
  // summed in block order: the same bits whatever the thread count.
  const int64_t block_rows = std::max<int64_t>(cpu::row_grain(dim), 16);
  const int64_t blocks = std::max<int64_t>(1, (rows + block_rows - 1) / block_rows);
  at::Tensor partial = at::zeros({blocks, dim}, x.options().dtype(at::kFloat));
  dispatch_dtypes(x, weight, [&](auto t, auto w) {
    using T = decltype(t);
    using W = decltype(w);
    const T* gp = grad.const_data_ptr<T>();
    const T* xp = x.const_data_ptr<T>();
    const W* wp = weight.const_data_ptr<W>();
    const float* ip = inv_rms.const_data_ptr<float>();
    T* dxp = dx.mutable_data_ptr<T>();
    float* pp = partial.mutable_data_ptr<float>();
    at::parallel_for(0, blocks, 1, [&](int64_t b0, int64_t b1) {
      for (int64_t b = b0; b < b1; ++b) {
        run_backward(gp, xp, wp, ip, dxp, pp + b * dim, dim, b * block_rows, std::min(rows, (b + 1) * block_rows));
      }
    });
  });
  at::Tensor dw = partial[0];
  float* dwp = dw.mutable_data_ptr<float>();
  const float* pp = partial.const_data_ptr<float>();
  at::parallel_for(0, dim, 256, [&](int64_t c0, int64_t c1) {
    for (int64_t b = 1; b < blocks; ++b) {
      for (int64_t c = c0; c < c1; ++c) dwp[c] += pp[b * dim + c];
    }
  });
  return {dx, dw.to(weight.scalar_type())};
}

// ---- any device, in ATen ops (the path for a device without its own kernel yet) ----------------
std::tuple<at::Tensor, at::Tensor> rms_norm_forward_aten(const at::Tensor& x, const at::Tensor& weight, double eps) {
  check_rms_norm_inputs(x, weight);
  const at::Tensor x32 = x.to(at::kFloat);
  const at::Tensor inv_rms = at::rsqrt(x32.pow(2).mean(-1, /*keepdim=*/true) + eps);
  return {(x32 * inv_rms * weight.to(at::kFloat)).to(x.scalar_type()), inv_rms.squeeze(-1)};
}

std::tuple<at::Tensor, at::Tensor> rms_norm_backward_aten(const at::Tensor& grad, const at::Tensor& x,
                                                          const at::Tensor& weight, const at::Tensor& inv_rms) {
  check_rms_norm_inputs(x, weight);
  const at::Tensor g = grad.to(at::kFloat), x32 = x.to(at::kFloat), w = weight.to(at::kFloat);
  const at::Tensor inv = inv_rms.to(at::kFloat).unsqueeze(-1);
  const at::Tensor dot = (g * w * x32).sum(-1, /*keepdim=*/true);
  const at::Tensor dx = inv * w * g - x32 * (dot * inv.pow(3) / static_cast<double>(x.size(-1)));
  const at::Tensor dw = (g * x32 * inv).reshape({-1, x.size(-1)}).sum(0);
  return {dx.to(x.scalar_type()), dw.to(weight.scalar_type())};
}

// ---- autograd ---------------------------------------------------------------------------------
std::tuple<at::Tensor, at::Tensor> call_forward(const at::Tensor& x, const at::Tensor& weight, double eps) {
  using Signature = std::tuple<at::Tensor, at::Tensor>(const at::Tensor&, const at::Tensor&, double);
  static const auto op = find_op<Signature>("latentmoe::rms_norm_forward");
  return op.call(x, weight, eps);
}

std::tuple<at::Tensor, at::Tensor> call_backward(const at::Tensor& grad, const at::Tensor& x, const at::Tensor& weight,
                                                 const at::Tensor& inv_rms) {
  using Signature = std::tuple<at::Tensor, at::Tensor>(const at::Tensor&, const at::Tensor&, const at::Tensor&,
                                                       const at::Tensor&);
  static const auto op = find_op<Signature>("latentmoe::rms_norm_backward");
  return op.call(grad, x, weight, inv_rms);
}

class RmsNormFunction : public torch::autograd::Function<RmsNormFunction> {
 public:
  static at::Tensor forward(torch::autograd::AutogradContext* ctx, const at::Tensor& x, const at::Tensor& weight,
                            double eps) {
    at::AutoDispatchBelowADInplaceOrView below_autograd;
    auto [y, inv_rms] = call_forward(x, weight, eps);
    ctx->save_for_backward({x, weight, inv_rms});
    return y;
  }
  static torch::autograd::tensor_list backward(torch::autograd::AutogradContext* ctx,
                                               torch::autograd::tensor_list grads) {
    const auto saved = ctx->get_saved_variables();
    auto [dx, dw] = call_backward(grads[0], saved[0], saved[1], saved[2]);
    return {dx, dw, at::Tensor()};
  }
};

at::Tensor rms_norm_autograd(const at::Tensor& x, const at::Tensor& weight, double eps) {
  return RmsNormFunction::apply(x, weight, eps);
}
}  // namespace

at::Tensor rms_norm_reference(const at::Tensor& x, const at::Tensor& weight, double eps) {
  return std::get<0>(rms_norm_forward_aten(x, weight, eps));
}

at::Tensor rms_norm(const at::Tensor& x, const at::Tensor& weight, double eps) {
  static const auto op = find_op<at::Tensor(const at::Tensor&, const at::Tensor&, double)>("latentmoe::rms_norm");
  return op.call(x, weight, eps);
}

TORCH_LIBRARY_IMPL(latentmoe, CPU, m) {
  m.impl("rms_norm", &rms_norm_cpu);
  m.impl("rms_norm_forward", &rms_norm_forward_cpu);
  m.impl("rms_norm_backward", &rms_norm_backward_cpu);
}

TORCH_LIBRARY_IMPL(latentmoe, CompositeExplicitAutograd, m) {
  m.impl("rms_norm", &rms_norm_reference);
  m.impl("rms_norm_forward", &rms_norm_forward_aten);
  m.impl("rms_norm_backward", &rms_norm_backward_aten);
}

TORCH_LIBRARY_IMPL(latentmoe, Autograd, m) { m.impl("rms_norm", &rms_norm_autograd); }

}  // namespace latentmoe::ops
