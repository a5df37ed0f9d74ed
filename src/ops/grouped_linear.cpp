// grouped_linear: reference, CPU kernel (one GEMM per non-empty group written straight into the
// output's rows, or torch's _grouped_mm), autograd, the autocast policy and dispatch.
#include "latentmoe/ops/grouped_linear.h"

#include <ATen/ATen.h>
#include <ATen/autocast_mode.h>
#include <c10/core/impl/LocalDispatchKeySet.h>
#include <torch/autograd.h>
#include <torch/library.h>

#include <algorithm>
#include <atomic>

#include "latentmoe/ops/linear.h"
#include "ops/op_checks.h"
#include "ops/op_handle.h"

namespace latentmoe::ops {

namespace {
std::atomic<GroupedGemmImpl> g_impl{GroupedGemmImpl::per_group_gemm};

at::Tensor offsets_of(c10::IntArrayRef group_sizes, const at::Device& device) {
  std::vector<int32_t> ends(group_sizes.size());
  int64_t end = 0;
  for (size_t e = 0; e < group_sizes.size(); ++e) ends[e] = static_cast<int32_t>(end += group_sizes[e]);
  return at::tensor(ends, at::kInt).to(device);
}

// oneDNN builds (JIT-compiles) a GEMM primitive for every new shape it meets — 2–3 ms each on a
// Sapphire Rapids core, measured — and a group's row count changes with the routing every step. In
// bf16 that cost more than the expert GEMMs themselves (profile of the debug preset: 107 of 149 ms
// of GEMM time per step, at 6–20 GFLOPS). Low-precision groups therefore run on row counts that
// are multiples of kRowBucket, a set of shapes that stays in oneDNN's primitive cache; fp32 goes
// to MKL, which has no such cost, and keeps the exact row counts.
constexpr int64_t kRowBucket = 32;

bool buckets_rows(const at::Tensor& t) { return t.scalar_type() == at::kBFloat16 || t.scalar_type() == at::kHalf; }

// out[offset, offset + n) = a[offset, offset + n) @ b. Rows are independent, so the group's last
// n % kRowBucket rows are computed in one kRowBucket-row GEMM over a window of a that holds them;
// the window's other rows only fill scratch rows that are dropped.
void group_rows_mm(at::Tensor& out, const at::Tensor& a, const at::Tensor& b, int64_t offset, int64_t n) {
  const int64_t whole = buckets_rows(a) ? n / kRowBucket * kRowBucket : n, rest = n - whole;
  if (whole > 0) {
    at::Tensor rows = out.narrow(0, offset, whole);
    at::mm_out(rows, a.narrow(0, offset, whole), b);
  }
  if (rest == 0) return;
  const int64_t first = offset + whole, total = a.size(0);
  at::Tensor window;
  int64_t window_start = 0;
  if (total >= kRowBucket) {
    window_start = std::min(first, total - kRowBucket);
    window = a.narrow(0, window_start, kRowBucket);
  } else {
    window = at::zeros({kRowBucket, a.size(1)}, a.options());
    window.narrow(0, 0, total).copy_(a);
  }
  out.narrow(0, first, rest).copy_(at::mm(window, b).narrow(0, first - window_start, rest));
}

// dweight = grad[offset, offset + n)^T @ x[offset, offset + n), on zero-padded copies of the rows
// when n is not a multiple of kRowBucket (zero rows add nothing; one GEMM keeps one rounding).
void group_weight_grad(at::Tensor& dweight, const at::Tensor& grad, const at::Tensor& x, int64_t offset, int64_t n) {
  if (!buckets_rows(x) || n % kRowBucket == 0) {
    at::mm_out(dweight, grad.narrow(0, offset, n).t(), x.narrow(0, offset, n));
    return;
  }
  const int64_t padded = (n + kRowBucket - 1) / kRowBucket * kRowBucket;
  const auto padded_rows = [&](const at::Tensor& t) {
    at::Tensor rows = at::empty({padded, t.size(1)}, t.options());
    rows.narrow(0, 0, n).copy_(t.narrow(0, offset, n));
    rows.narrow(0, n, padded - n).zero_();
    return rows;
  };
  at::mm_out(dweight, padded_rows(grad).t(), padded_rows(x));
}

at::Tensor grouped_linear_cpu(const at::Tensor& x, const at::Tensor& weight, c10::IntArrayRef group_sizes) {
  check_grouped_linear_inputs(x, weight, group_sizes);
  // _grouped_mm needs 16-byte aligned row strides; other widths take the per-group loop.
  const auto aligned = [](const at::Tensor& t, int64_t width) { return width * t.element_size() % 16 == 0; };
  if (g_impl.load() == GroupedGemmImpl::torch_grouped_mm && x.size(0) > 0 && aligned(x, x.size(1)) &&
      aligned(x, weight.size(1))) {
    return at::_grouped_mm(x, weight.transpose(1, 2), offsets_of(group_sizes, x.device()));
  }
  at::Tensor out = at::empty({x.size(0), weight.size(1)}, x.options());
  int64_t offset = 0;
  for (size_t e = 0; e < group_sizes.size(); ++e) {
    const int64_t n = group_sizes[e];
    if (n == 0) continue;
    group_rows_mm(out, x, weight[static_cast<int64_t>(e)].t(), offset, n);
    offset += n;
  }
  return out;
}

// dx[rows of e] = grad[rows of e] @ weight[e]; dweight[e] = grad[rows of e]^T @ x[rows of e].
std::tuple<at::Tensor, at::Tensor> grouped_linear_backward_cpu(const at::Tensor& grad_in, const at::Tensor& x,
                                                               const at::Tensor& weight, c10::IntArrayRef group_sizes,
                                                               bool need_x, bool need_weight) {
  check_grouped_linear_inputs(x, weight, group_sizes);
  TORCH_CHECK(grad_in.dim() == 2 && grad_in.size(0) == x.size(0) && grad_in.size(1) == weight.size(1),
              "grouped_linear_backward: grad must be [", x.size(0), ", ", weight.size(1), "], got ", grad_in.sizes());
  const at::Tensor grad = grad_in.to(x.scalar_type());
  at::Tensor dx = need_x ? at::empty_like(x) : at::Tensor();
  at::Tensor dweight = need_weight ? at::empty_like(weight) : at::Tensor();
  int64_t offset = 0;
  for (size_t e = 0; e < group_sizes.size(); ++e) {
    const int64_t n = group_sizes[e], expert = static_cast<int64_t>(e);
    if (n == 0) {
      if (need_weight) dweight[expert].zero_();
      continue;
    }
    if (need_x) group_rows_mm(dx, grad, weight[expert], offset, n);
    if (need_weight) {
      at::Tensor dw = dweight[expert];
      group_weight_grad(dw, grad, x, offset, n);
    }
    offset += n;
  }
  return {dx, dweight};
}

// Any device, in ATen ops (the path for a device without its own kernel yet).
std::tuple<at::Tensor, at::Tensor> grouped_linear_backward_aten(const at::Tensor& grad, const at::Tensor& x,
                                                                const at::Tensor& weight, c10::IntArrayRef group_sizes,
                                                                bool need_x, bool need_weight) {
  check_grouped_linear_inputs(x, weight, group_sizes);
  std::vector<at::Tensor> dxs, dws;
  int64_t offset = 0;
  for (size_t e = 0; e < group_sizes.size(); ++e) {
    const int64_t n = group_sizes[e];
    const at::Tensor g = grad.narrow(0, offset, n).to(x.scalar_type());
    if (need_x) dxs.push_back(at::mm(g, weight[static_cast<int64_t>(e)]));
    if (need_weight) dws.push_back(at::mm(g.t(), x.narrow(0, offset, n)));
    offset += n;
  }
  at::Tensor dx = need_x ? (dxs.empty() ? at::empty_like(x) : at::cat(dxs)) : at::Tensor();
  at::Tensor dweight = need_weight ? (dws.empty() ? at::zeros_like(weight) : at::stack(dws)) : at::Tensor();
  return {dx, dweight};
}

at::Tensor call_forward(const at::Tensor& x, const at::Tensor& weight, c10::IntArrayRef group_sizes) {
  static const auto op =
      find_op<at::Tensor(const at::Tensor&, const at::Tensor&, c10::IntArrayRef)>("latentmoe::grouped_linear");
  return op.call(x, weight, group_sizes);
}

std::tuple<at::Tensor, at::Tensor> call_backward(const at::Tensor& grad, const at::Tensor& x, const at::Tensor& weight,
                                                 c10::IntArrayRef group_sizes, bool need_x, bool need_weight) {
  using Signature = std::tuple<at::Tensor, at::Tensor>(const at::Tensor&, const at::Tensor&, const at::Tensor&,
                                                       c10::IntArrayRef, bool, bool);
  static const auto op = find_op<Signature>("latentmoe::grouped_linear_backward");
  return op.call(grad, x, weight, group_sizes, need_x, need_weight);
}

class GroupedLinearFunction : public torch::autograd::Function<GroupedLinearFunction> {
 public:
  static at::Tensor forward(torch::autograd::AutogradContext* ctx, const at::Tensor& x, const at::Tensor& weight,
                            c10::IntArrayRef group_sizes) {
    at::AutoDispatchBelowADInplaceOrView below_autograd;
    ctx->save_for_backward({x, weight});
    ctx->saved_data["group_sizes"] = group_sizes.vec();
    return call_forward(x, weight, group_sizes);
  }
  static torch::autograd::tensor_list backward(torch::autograd::AutogradContext* ctx,
                                               torch::autograd::tensor_list grads) {
    const auto saved = ctx->get_saved_variables();
    const std::vector<int64_t> sizes = ctx->saved_data["group_sizes"].toIntVector();
    auto [dx, dweight] = call_backward(grads[0], saved[0], saved[1], sizes, ctx->needs_input_grad(0),
                                       ctx->needs_input_grad(1));
    return {dx, dweight, at::Tensor()};
  }
};

at::Tensor grouped_linear_autograd(const at::Tensor& x, const at::Tensor& weight, c10::IntArrayRef group_sizes) {
  return GroupedLinearFunction::apply(x, weight, group_sizes);
}
}  // namespace

void set_cpu_grouped_gemm_impl(GroupedGemmImpl impl) { g_impl = impl; }

at::Tensor grouped_linear_reference(const at::Tensor& x, const at::Tensor& weight, c10::IntArrayRef group_sizes) {
  check_grouped_linear_inputs(x, weight, group_sizes);
  std::vector<at::Tensor> outputs;
  int64_t offset = 0;
  for (size_t e = 0; e < group_sizes.size(); ++e) {
    outputs.push_back(at::linear(x.narrow(0, offset, group_sizes[e]), weight[static_cast<int64_t>(e)]));
    offset += group_sizes[e];
  }
  if (outputs.empty()) return at::empty({x.size(0), weight.size(1)}, x.options());
  return at::cat(outputs);
}

at::Tensor grouped_linear(const at::Tensor& x, const at::Tensor& weight, c10::IntArrayRef group_sizes) {
  const c10::DeviceType device = x.device().type();
  if (!at::autocast::is_autocast_enabled(device)) return call_forward(x, weight, group_sizes);
  const at::ScalarType dtype = at::autocast::get_autocast_dtype(device);
  const c10::impl::ExcludeDispatchKeyGuard no_autocast(
      c10::DispatchKeySet({c10::DispatchKey::AutocastCPU, c10::DispatchKey::AutocastCUDA}));
  if (emulated_autocast_dtype(device)) {
    return call_forward(rounded_to(x, dtype), rounded_to(weight, dtype), group_sizes).to(dtype);
  }
  return call_forward(x.to(dtype), weight.to(dtype), group_sizes);
}

TORCH_LIBRARY_IMPL(latentmoe, CPU, m) {
  m.impl("grouped_linear", &grouped_linear_cpu);
  m.impl("grouped_linear_backward", &grouped_linear_backward_cpu);
}

TORCH_LIBRARY_IMPL(latentmoe, CompositeExplicitAutograd, m) {
  m.impl("grouped_linear", &grouped_linear_reference);
  m.impl("grouped_linear_backward", &grouped_linear_backward_aten);
}

TORCH_LIBRARY_IMPL(latentmoe, Autograd, m) { m.impl("grouped_linear", &grouped_linear_autograd); }

}  // namespace latentmoe::ops
