// moe_permute / moe_unpermute: references, CPU kernels (one pass, a token's rows per thread,
// fp32 sums), autograd and dispatch.
#include "latentmoe/ops/moe_permute.h"

#include <ATen/ATen.h>
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

// sorted[row] = scale * token (each sorted row written once).
template <typename T>
LMOE_ALWAYS_INLINE void scaled_copy(const T* token, float scale, T* row, int64_t hidden) {
  for (int64_t h = 0; h < hidden; ++h) row[h] = from_float<T>(scale * to_float(token[h]));
}

// out = sum_j w_j * rows[j], accumulated in fp32 in j order.
template <typename T>
LMOE_ALWAYS_INLINE void weighted_sum(const T* const* rows, const float* w, int64_t k, T* out, float* acc,
                                     int64_t hidden) {
  for (int64_t h = 0; h < hidden; ++h) acc[h] = 0.0f;
  for (int64_t j = 0; j < k; ++j) {
    const T* r = rows[j];
    const float wj = w[j];
    for (int64_t h = 0; h < hidden; ++h) acc[h] += wj * to_float(r[h]);
  }
  for (int64_t h = 0; h < hidden; ++h) out[h] = from_float<T>(acc[h]);
}

template <typename T>
LMOE_ALWAYS_INLINE float row_dot(const T* a, const T* b, int64_t hidden) {
  float sum = 0.0f;
  for (int64_t h = 0; h < hidden; ++h) sum += to_float(a[h]) * to_float(b[h]);
  return sum;
}

#define LMOE_PERMUTE_KERNELS(T, suffix)                                                                         \
  LMOE_CPU_CLONES void scaled_copy_##suffix(const T* token, float scale, T* row, int64_t hidden) {                \
    scaled_copy(token, scale, row, hidden);                                                                       \
  }                                                                                                               \
  LMOE_CPU_CLONES void weighted_sum_##suffix(const T* const* rows, const float* w, int64_t k, T* out, float* acc, \
                                             int64_t hidden) {                                                    \
    weighted_sum(rows, w, k, out, acc, hidden);                                                                   \
  }                                                                                                               \
  LMOE_CPU_CLONES float row_dot_##suffix(const T* a, const T* b, int64_t hidden) { return row_dot(a, b, hidden); } \
  void run_scaled_copy(const T* token, float scale, T* row, int64_t hidden) {                                     \
    scaled_copy_##suffix(token, scale, row, hidden);                                                              \
  }                                                                                                               \
  void run_weighted_sum(const T* const* rows, const float* w, int64_t k, T* out, float* acc, int64_t hidden) {    \
    weighted_sum_##suffix(rows, w, k, out, acc, hidden);                                                          \
  }                                                                                                               \
  float run_row_dot(const T* a, const T* b, int64_t hidden) { return row_dot_##suffix(a, b, hidden); }
LMOE_PERMUTE_KERNELS(float, f32)
LMOE_PERMUTE_KERNELS(c10::BFloat16, bf16)
LMOE_PERMUTE_KERNELS(c10::Half, f16)
#undef LMOE_PERMUTE_KERNELS

struct Prepared {
  at::Tensor data, positions, weights;  // contiguous; positions int64; weights fp32 or undefined
  int64_t tokens, top_k, hidden;
};

Prepared prepare(const char* op, const at::Tensor& data, const at::Tensor& positions,
                 const std::optional<at::Tensor>& weights, int64_t data_rows) {
  check_moe_permute_inputs(op, data, positions, weights, data_rows);
  Prepared p;
  p.data = data.contiguous();
  p.positions = positions.to(at::kLong).contiguous();
  if (weights && weights->defined()) p.weights = weights->to(at::kFloat).contiguous();
  p.tokens = positions.size(0);
  p.top_k = positions.size(1);
  p.hidden = data.size(1);
  return p;
}

// sorted[positions[t, j]] = weights[t, j] * tokens[t]  (weights = 1 when undefined).
at::Tensor permute_cpu(const at::Tensor& tokens, const at::Tensor& positions, const std::optional<at::Tensor>& weights) {
  const Prepared p = prepare("moe_permute", tokens, positions, weights, positions.size(0));
  at::Tensor sorted = at::empty({p.tokens * p.top_k, p.hidden}, tokens.options());
  cpu::dispatch_float_type(tokens.scalar_type(), "moe_permute", [&](auto tag) {
    using T = decltype(tag);
    const T* in = p.data.const_data_ptr<T>();
    T* out = sorted.mutable_data_ptr<T>();
    const int64_t* pos = p.positions.const_data_ptr<int64_t>();
    const float* w = p.weights.defined() ? p.weights.const_data_ptr<float>() : nullptr;
    at::parallel_for(0, p.tokens, cpu::row_grain(p.hidden * p.top_k), [&](int64_t b, int64_t e) {
      for (int64_t t = b; t < e; ++t) {
        for (int64_t j = 0; j < p.top_k; ++j) {
          const int64_t i = t * p.top_k + j;
          run_scaled_copy(in + t * p.hidden, w ? w[i] : 1.0f, out + pos[i] * p.hidden, p.hidden);
        }
      }
    });
  });
  return sorted;
}

// out[t] = sum_j weights[t, j] * sorted[positions[t, j]].
at::Tensor unpermute_cpu(const at::Tensor& sorted, const at::Tensor& positions, const std::optional<at::Tensor>& weights) {
  const Prepared p = prepare("moe_unpermute", sorted, positions, weights, positions.numel());
  at::Tensor out = at::empty({p.tokens, p.hidden}, sorted.options());
  cpu::dispatch_float_type(sorted.scalar_type(), "moe_permute", [&](auto tag) {
    using T = decltype(tag);
    const T* in = p.data.const_data_ptr<T>();
    T* op = out.mutable_data_ptr<T>();
    const int64_t* pos = p.positions.const_data_ptr<int64_t>();
    const float* w = p.weights.defined() ? p.weights.const_data_ptr<float>() : nullptr;
    at::parallel_for(0, p.tokens, cpu::row_grain(p.hidden * p.top_k), [&](int64_t b, int64_t e) {
      std::vector<float> acc(static_cast<size_t>(p.hidden)), ones(static_cast<size_t>(p.top_k), 1.0f);
      std::vector<const T*> rows(static_cast<size_t>(p.top_k));
      for (int64_t t = b; t < e; ++t) {
        for (int64_t j = 0; j < p.top_k; ++j) rows[static_cast<size_t>(j)] = in + pos[t * p.top_k + j] * p.hidden;
        run_weighted_sum(rows.data(), w ? w + t * p.top_k : ones.data(), p.top_k, op + t * p.hidden, acc.data(),
                         p.hidden);
      }
    });
  });
  return out;
}

// d weights[t, j] = <grad[t], sorted[positions[t, j]]> (fp32).
at::Tensor unpermute_weight_grad_cpu(const at::Tensor& grad_in, const at::Tensor& sorted, const at::Tensor& positions) {
  const Prepared p = prepare("moe_unpermute", sorted, positions, std::nullopt, positions.numel());
  TORCH_CHECK(grad_in.dim() == 2 && grad_in.size(0) == p.tokens && grad_in.size(1) == p.hidden,
              "moe_unpermute_weight_grad: grad must be [", p.tokens, ", ", p.hidden, "], got ", grad_in.sizes());
  const at::Tensor grad = grad_in.to(sorted.scalar_type()).contiguous();
  at::Tensor dw = at::empty({p.tokens, p.top_k}, sorted.options().dtype(at::kFloat));
  cpu::dispatch_float_type(sorted.scalar_type(), "moe_permute", [&](auto tag) {
    using T = decltype(tag);
    const T* in = p.data.const_data_ptr<T>();
    const T* g = grad.const_data_ptr<T>();
    const int64_t* pos = p.positions.const_data_ptr<int64_t>();
    float* out = dw.mutable_data_ptr<float>();
    at::parallel_for(0, p.tokens, cpu::row_grain(p.hidden * p.top_k), [&](int64_t b, int64_t e) {
      for (int64_t i = b * p.top_k; i < e * p.top_k; ++i) {
        out[i] = run_row_dot(g + (i / p.top_k) * p.hidden, in + pos[i] * p.hidden, p.hidden);
      }
    });
  });
  return dw;
}

// Any device, in ATen ops: flat assignment i = t * top_k + j goes to row positions[i].
at::Tensor permute_aten(const at::Tensor& tokens, const at::Tensor& positions, const std::optional<at::Tensor>& weights) {
  check_moe_permute_inputs("moe_permute", tokens, positions, weights, positions.size(0));
  const int64_t top_k = positions.size(1);
  const at::Tensor flat_pos = positions.reshape(-1).to(at::kLong);
  at::Tensor rows = tokens.repeat_interleave(top_k, 0);
  if (weights && weights->defined()) rows = (rows.to(at::kFloat) * weights->reshape({-1, 1})).to(tokens.scalar_type());
  return at::empty_like(rows).index_copy_(0, flat_pos, rows);
}

at::Tensor unpermute_aten(const at::Tensor& sorted, const at::Tensor& positions, const std::optional<at::Tensor>& weights) {
  check_moe_permute_inputs("moe_unpermute", sorted, positions, weights, positions.numel());
  const int64_t tokens = positions.size(0), top_k = positions.size(1);
  at::Tensor picked = sorted.index_select(0, positions.reshape(-1).to(at::kLong)).to(at::kFloat).view({tokens, top_k, sorted.size(1)});
  if (weights && weights->defined()) picked = picked * weights->to(at::kFloat).unsqueeze(-1);
  return picked.sum(1).to(sorted.scalar_type());
}

at::Tensor unpermute_weight_grad_aten(const at::Tensor& grad, const at::Tensor& sorted, const at::Tensor& positions) {
  check_moe_permute_inputs("moe_unpermute", sorted, positions, std::nullopt, positions.numel());
  const int64_t tokens = positions.size(0), top_k = positions.size(1);
  const at::Tensor picked = sorted.index_select(0, positions.reshape(-1).to(at::kLong)).to(at::kFloat).view({tokens, top_k, sorted.size(1)});
  return (picked * grad.to(at::kFloat).unsqueeze(1)).sum(-1);
}

using OptionalTensor = std::optional<at::Tensor>;
at::Tensor call_permute(const at::Tensor& tokens, const at::Tensor& positions, const OptionalTensor& weights) {
  static const auto op =
      find_op<at::Tensor(const at::Tensor&, const at::Tensor&, const OptionalTensor&)>("latentmoe::moe_permute");
  return op.call(tokens, positions, weights);
}
at::Tensor call_unpermute(const at::Tensor& sorted, const at::Tensor& positions, const OptionalTensor& weights) {
  static const auto op =
      find_op<at::Tensor(const at::Tensor&, const at::Tensor&, const OptionalTensor&)>("latentmoe::moe_unpermute");
  return op.call(sorted, positions, weights);
}
at::Tensor call_weight_grad(const at::Tensor& grad, const at::Tensor& sorted, const at::Tensor& positions) {
  static const auto op = find_op<at::Tensor(const at::Tensor&, const at::Tensor&, const at::Tensor&)>(
      "latentmoe::moe_unpermute_weight_grad");
  return op.call(grad, sorted, positions);
}

// The two are each other's backward: permute's is the unweighted unpermute, unpermute's is the
// weighted permute plus the per-assignment dot products for the gate weights.
class PermuteFunction : public torch::autograd::Function<PermuteFunction> {
 public:
  static at::Tensor forward(torch::autograd::AutogradContext* ctx, const at::Tensor& tokens, const at::Tensor& positions,
                            const OptionalTensor& weights) {
    at::AutoDispatchBelowADInplaceOrView below_autograd;
    TORCH_CHECK(!(weights && weights->defined() && weights->requires_grad() && at::GradMode::is_enabled()),
                "moe_permute: weights are not differentiable here (scale after moe_unpermute instead)");
    ctx->save_for_backward({positions, weights && weights->defined() ? *weights : at::Tensor()});
    return call_permute(tokens, positions, weights);
  }
  static torch::autograd::tensor_list backward(torch::autograd::AutogradContext* ctx,
                                               torch::autograd::tensor_list grads) {
    const auto saved = ctx->get_saved_variables();
    const OptionalTensor weights = saved[1].defined() ? OptionalTensor(saved[1]) : std::nullopt;
    return {call_unpermute(grads[0], saved[0], weights), at::Tensor(), at::Tensor()};
  }
};

class UnpermuteFunction : public torch::autograd::Function<UnpermuteFunction> {
 public:
  static at::Tensor forward(torch::autograd::AutogradContext* ctx, const at::Tensor& sorted, const at::Tensor& positions,
                            const OptionalTensor& weights) {
    at::AutoDispatchBelowADInplaceOrView below_autograd;
    const at::Tensor w = weights && weights->defined() ? *weights : at::Tensor();
    ctx->save_for_backward({sorted, positions, w});
    return call_unpermute(sorted, positions, weights);
  }
  static torch::autograd::tensor_list backward(torch::autograd::AutogradContext* ctx,
                                               torch::autograd::tensor_list grads) {
    const auto saved = ctx->get_saved_variables();
    const OptionalTensor weights = saved[2].defined() ? OptionalTensor(saved[2]) : std::nullopt;
    at::Tensor dsorted = ctx->needs_input_grad(0) ? call_permute(grads[0], saved[1], weights) : at::Tensor();
    at::Tensor dweights =
        saved[2].defined() && ctx->needs_input_grad(2) ? call_weight_grad(grads[0], saved[0], saved[1]) : at::Tensor();
    return {dsorted, at::Tensor(), dweights};
  }
};

at::Tensor permute_autograd(const at::Tensor& tokens, const at::Tensor& positions, const OptionalTensor& weights) {
  return PermuteFunction::apply(tokens, positions, weights);
}
at::Tensor unpermute_autograd(const at::Tensor& sorted, const at::Tensor& positions, const OptionalTensor& weights) {
  return UnpermuteFunction::apply(sorted, positions, weights);
}
}  // namespace

at::Tensor moe_positions(const at::Tensor& order, int64_t top_k) {
  TORCH_CHECK(top_k > 0 && order.dim() == 1 && order.numel() % top_k == 0, "moe_positions: order must be [tokens * ",
              top_k, "], got ", order.sizes());
  return at::empty_like(order).scatter_(0, order, at::arange(order.numel(), order.options())).view({-1, top_k});
}

at::Tensor moe_permute(const at::Tensor& tokens, const at::Tensor& positions) {
  return call_permute(tokens, positions, std::nullopt);
}

at::Tensor moe_unpermute(const at::Tensor& sorted, const at::Tensor& positions, const at::Tensor& weights) {
  return call_unpermute(sorted, positions, weights);
}

at::Tensor moe_permute_reference(const at::Tensor& tokens, const at::Tensor& positions) {
  return permute_aten(tokens, positions, std::nullopt);
}

at::Tensor moe_unpermute_reference(const at::Tensor& sorted, const at::Tensor& positions, const at::Tensor& weights) {
  return unpermute_aten(sorted, positions, weights);
}

TORCH_LIBRARY_IMPL(latentmoe, CPU, m) {
  m.impl("moe_permute", &permute_cpu);
  m.impl("moe_unpermute", &unpermute_cpu);
  m.impl("moe_unpermute_weight_grad", &unpermute_weight_grad_cpu);
}

TORCH_LIBRARY_IMPL(latentmoe, CompositeExplicitAutograd, m) {
  m.impl("moe_permute", &permute_aten);
  m.impl("moe_unpermute", &unpermute_aten);
  m.impl("moe_unpermute_weight_grad", &unpermute_weight_grad_aten);
}

TORCH_LIBRARY_IMPL(latentmoe, Autograd, m) {
  m.impl("moe_permute", &permute_autograd);
  m.impl("moe_unpermute", &unpermute_autograd);
}

}  // namespace latentmoe::ops
