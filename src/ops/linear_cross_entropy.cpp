// linear_cross_entropy: chunked LM head + cross entropy. The chunk loop is device-generic ATen
// (GEMMs through at::mm); the per-row softmax step is the op cross_entropy_rows, with a one-pass
// CPU kernel (max, exp-sum, loss and gradient per row) and an ATen body for other devices.
#include "latentmoe/ops/linear_cross_entropy.h"

#include <ATen/Parallel.h>
#include <c10/core/impl/LocalDispatchKeySet.h>
#include <torch/autograd.h>
#include <torch/library.h>

#include <cmath>
#include <limits>
#include <mutex>
#include <type_traits>
#include <vector>

#include "ops/cpu_kernel_util.h"
#include "ops/cpu_vec.h"
#include "ops/op_checks.h"
#include "ops/op_handle.h"

namespace latentmoe::ops {

namespace {
using cpu::fast_exp;
using cpu::from_float;
using cpu::to_float;

// ---- cross_entropy_rows: CPU kernel -------------------------------------------------------------
#if LMOE_HAVE_AVX512_KERNELS
// One counted row in AVX-512, the same three passes as below: max and x*0 (the NaN/inf poison),
// exponentials into scratch and their sum, then softmax - onehot(label) into g (if given).
template <typename T>
LMOE_AVX512 float xent_row_avx512(const T* x, int64_t label, T* g, float* scratch, int64_t vocab) {
  namespace vx = cpu::avx512;
  const __m512 zero = _mm512_setzero_ps();
  __m512 row_max = _mm512_set1_ps(-std::numeric_limits<float>::infinity()), poison = zero;
  for (int64_t j = 0; j < vocab; j += 16) {
    const __mmask16 m = vx::first_lanes(vocab - j);
    const __m512 v = vx::load(x + j, m, row_max);  // lanes past the row repeat the max so far
    row_max = _mm512_max_ps(row_max, v);
    poison = _mm512_mask_add_ps(poison, m, poison, _mm512_mul_ps(v, zero));
  }
  const float max = _mm512_reduce_max_ps(row_max), poison_sum = _mm512_reduce_add_ps(poison);
  const __m512 max16 = _mm512_set1_ps(max);
  __m512 sum = zero;
  for (int64_t j = 0; j < vocab; j += 16) {
    const __mmask16 m = vx::first_lanes(vocab - j);
    const __m512 e = vx::exp(_mm512_sub_ps(vx::load(x + j, m, zero), max16));
    _mm512_mask_storeu_ps(scratch + j, m, e);
    sum = _mm512_mask_add_ps(sum, m, sum, e);
  }
  const float total = _mm512_reduce_add_ps(sum);
  if (g) {
    const float inv = 1.0f / total;
    const __m512 inv16 = _mm512_set1_ps(inv), poison16 = _mm512_set1_ps(poison_sum);
    for (int64_t j = 0; j < vocab; j += 16) {
      const __mmask16 m = vx::first_lanes(vocab - j);
      vx::store(g + j, m, _mm512_fmadd_ps(vx::load(scratch + j, m, zero), inv16, poison16));
    }
    g[label] = from_float<T>(scratch[label] * inv - 1.0f + poison_sum);
  }
  return max + std::log(total) - to_float(x[label]) + poison_sum;
}
#endif

// One row: loss = logsumexp(x) - x[label]; d = softmax(x) - onehot(label). `scratch` holds the
// row's exponentials between the two passes. A NaN or inf logit makes the row's loss NaN (the
// trainer's non-finite check must see it), via the sum of x*0.
template <typename T>
LMOE_ALWAYS_INLINE void xent_rows(const T* logits, const int64_t* labels, float* losses, T* grad, float* scratch,
                                  int64_t vocab, int64_t ignore_index, int64_t* bad_label, int64_t begin, int64_t end) {
  const bool avx512 = cpu::has_avx512();
  for (int64_t r = begin; r < end; ++r) {
    const T* x = logits + r * vocab;
    const int64_t label = labels[r];
    if (label == ignore_index) {
      losses[r] = 0.0f;
      if (grad) {
        for (int64_t j = 0; j < vocab; ++j) grad[r * vocab + j] = from_float<T>(0.0f);
      }
      continue;
    }
    if (label < 0 || label >= vocab) {
      *bad_label = label;
      losses[r] = std::numeric_limits<float>::quiet_NaN();
      continue;
    }
#if LMOE_HAVE_AVX512_KERNELS
    if constexpr (!std::is_same_v<T, c10::Half>) {
      if (avx512) {
        losses[r] = xent_row_avx512(x, label, grad ? grad + r * vocab : nullptr, scratch, vocab);
        continue;
      }
    }
#endif
    float lanes_max[8], lanes_poison[8];
    for (int l = 0; l < 8; ++l) lanes_max[l] = -std::numeric_limits<float>::infinity(), lanes_poison[l] = 0.0f;
    int64_t j = 0;
    for (; j + 8 <= vocab; j += 8) {
      for (int l = 0; l < 8; ++l) {
        const float v = to_float(x[j + l]);
        lanes_max[l] = v > lanes_max[l] ? v : lanes_max[l];
        lanes_poison[l] += v * 0.0f;
      }
    }
    float max = -std::numeric_limits<float>::infinity(), poison = 0.0f;
    for (; j < vocab; ++j) {
      const float v = to_float(x[j]);
      max = v > max ? v : max;
      poison += v * 0.0f;
    }
    for (int l = 0; l < 8; ++l) max = lanes_max[l] > max ? lanes_max[l] : max, poison += lanes_poison[l];
    float lanes_sum[8] = {0, 0, 0, 0, 0, 0, 0, 0};
    j = 0;
    for (; j + 8 <= vocab; j += 8) {
      for (int l = 0; l < 8; ++l) {
        const float e = fast_exp(to_float(x[j + l]) - max);
        scratch[j + l] = e;
        lanes_sum[l] += e;
      }
    }
    float sum = 0.0f;
    for (; j < vocab; ++j) {
      const float e = fast_exp(to_float(x[j]) - max);
      scratch[j] = e;
      sum += e;
    }
    for (float s : lanes_sum) sum += s;
    losses[r] = max + std::log(sum) - to_float(x[label]) + poison;
    if (grad) {
      const float inv = 1.0f / sum;
      T* g = grad + r * vocab;
      for (int64_t k = 0; k < vocab; ++k) g[k] = from_float<T>(scratch[k] * inv + poison);
      g[label] = from_float<T>(scratch[label] * inv - 1.0f + poison);
    }
  }
}

#define LMOE_XENT_KERNELS(T, suffix)                                                                            \
  LMOE_CPU_CLONES void xent_##suffix(const T* logits, const int64_t* labels, float* losses, T* grad,             \
                                     float* scratch, int64_t vocab, int64_t ignore_index, int64_t* bad_label,    \
                                     int64_t begin, int64_t end) {                                               \
    xent_rows(logits, labels, losses, grad, scratch, vocab, ignore_index, bad_label, begin, end);                \
  }                                                                                                              \
  void run_xent(const T* logits, const int64_t* labels, float* losses, T* grad, float* scratch, int64_t vocab,   \
                int64_t ignore_index, int64_t* bad_label, int64_t begin, int64_t end) {                          \
    xent_##suffix(logits, labels, losses, grad, scratch, vocab, ignore_index, bad_label, begin, end);            \
  }
LMOE_XENT_KERNELS(float, f32)
LMOE_XENT_KERNELS(c10::BFloat16, bf16)
LMOE_XENT_KERNELS(c10::Half, f16)
#undef LMOE_XENT_KERNELS

void check_rows_inputs(const at::Tensor& logits, const at::Tensor& labels) {
  TORCH_CHECK(logits.dim() == 2, "cross_entropy_rows: logits must be [rows, vocab], got ", logits.sizes());
  TORCH_CHECK(is_supported_float(logits.scalar_type()), "cross_entropy_rows: logits must be float32, bfloat16 or "
              "float16, got ", logits.scalar_type());
  TORCH_CHECK(labels.dim() == 1 && labels.size(0) == logits.size(0) && labels.scalar_type() == at::kLong,
              "cross_entropy_rows: labels must be int64 [", logits.size(0), "], got ", labels.scalar_type(), " ",
              labels.sizes());
}

void throw_bad_label(int64_t label, int64_t vocab, int64_t ignore_index) {
  TORCH_CHECK(false, "cross entropy: label ", label, " is outside [0, ", vocab, ") and is not the ignored label ",
              ignore_index);
}

std::tuple<at::Tensor, at::Tensor> cross_entropy_rows_cpu(const at::Tensor& logits_in, const at::Tensor& labels_in,
                                                          int64_t ignore_index, bool with_grad) {
  check_rows_inputs(logits_in, labels_in);
  const at::Tensor logits = logits_in.contiguous(), labels = labels_in.contiguous();
  const int64_t rows = logits.size(0), vocab = logits.size(1);
  at::Tensor losses = at::empty({rows}, logits.options().dtype(at::kFloat));
  at::Tensor grad = with_grad ? at::empty_like(logits) : at::Tensor();
  int64_t bad_label = 0;
  bool bad = false;
  const auto body = [&](auto tag) {
    using T = decltype(tag);
    const T* lp = logits.const_data_ptr<T>();
    const int64_t* yp = labels.const_data_ptr<int64_t>();
    float* op = losses.mutable_data_ptr<float>();
    T* gp = with_grad ? grad.mutable_data_ptr<T>() : nullptr;
    std::mutex bad_mutex;
    at::parallel_for(0, rows, 1, [&](int64_t b, int64_t e) {
      std::vector<float> scratch(static_cast<size_t>(vocab));
      int64_t local_bad = ignore_index;
      run_xent(lp, yp, op, gp, scratch.data(), vocab, ignore_index, &local_bad, b, e);
      if (local_bad != ignore_index) {
        const std::lock_guard<std::mutex> lock(bad_mutex);
        bad = true;
        bad_label = local_bad;
      }
    });
  };
  cpu::dispatch_float_type(logits.scalar_type(), "cross_entropy_rows", body);
  if (bad) throw_bad_label(bad_label, vocab, ignore_index);
  return {losses, grad};
}

// Any device, in ATen ops.
std::tuple<at::Tensor, at::Tensor> cross_entropy_rows_aten(const at::Tensor& logits, const at::Tensor& labels,
                                                           int64_t ignore_index, bool with_grad) {
  check_rows_inputs(logits, labels);
  const int64_t vocab = logits.size(1);
  const at::Tensor counted = labels != ignore_index;
  const at::Tensor bad = counted & ((labels < 0) | (labels >= vocab));
  if (bad.any().item<bool>()) throw_bad_label(labels.masked_select(bad)[0].item<int64_t>(), vocab, ignore_index);
  const at::Tensor safe = labels.masked_fill(counted.logical_not(), 0);
  const at::Tensor log_probs = logits.to(at::kFloat).log_softmax(-1);
  const at::Tensor losses = (-log_probs.gather(1, safe.unsqueeze(1)).squeeze(1)) * counted;
  if (!with_grad) return {losses, at::Tensor()};
  const at::Tensor onehot = at::zeros_like(log_probs).scatter_(1, safe.unsqueeze(1), 1.0);
  const at::Tensor grad = (log_probs.exp() - onehot) * counted.unsqueeze(1);
  return {losses, grad.to(logits.scalar_type())};
}

std::tuple<at::Tensor, at::Tensor> call_rows(const at::Tensor& logits, const at::Tensor& labels, int64_t ignore_index,
                                             bool with_grad) {
  using Signature = std::tuple<at::Tensor, at::Tensor>(const at::Tensor&, const at::Tensor&, int64_t, bool);
  static const auto op = find_op<Signature>("latentmoe::cross_entropy_rows");
  return op.call(logits, labels, ignore_index, with_grad);
}

// ---- the chunked head --------------------------------------------------------------------------
void check_head_inputs(const at::Tensor& hidden, const at::Tensor& weight, const at::Tensor& labels) {
  TORCH_CHECK(hidden.dim() == 2 && weight.dim() == 2 && hidden.size(1) == weight.size(1),
              "linear_cross_entropy: hidden must be [rows, H] and weight [vocab, H], got ", hidden.sizes(), " and ",
              weight.sizes());
  TORCH_CHECK(hidden.scalar_type() == weight.scalar_type(), "linear_cross_entropy: hidden (", hidden.scalar_type(),
              ") and weight (", weight.scalar_type(), ") must have the compute dtype; cast the weight first");
  TORCH_CHECK(labels.dim() == 1 && labels.size(0) == hidden.size(0) && labels.scalar_type() == at::kLong,
              "linear_cross_entropy: labels must be int64 [", hidden.size(0), "], got ", labels.scalar_type(), " ",
              labels.sizes());
}

int64_t rows_per_chunk(int64_t chunk_rows, int64_t vocab) {
  if (chunk_rows > 0) return chunk_rows;
  constexpr int64_t kChunkBytes = 64ll << 20;
  return std::max<int64_t>(16, kChunkBytes / (4 * std::max<int64_t>(vocab, 1)));
}

// (loss sum, d loss / d hidden, d loss / d weight); the gradients only when asked for.
std::tuple<at::Tensor, at::Tensor, at::Tensor> head_forward(const at::Tensor& hidden_in, const at::Tensor& weight_in,
                                                            const at::Tensor& labels_in, int64_t ignore_index,
                                                            int64_t chunk_rows, bool with_grad) {
  check_head_inputs(hidden_in, weight_in, labels_in);
  // The caller chose the compute dtype (the inputs'); autocast must not re-cast the GEMMs inside.
  const c10::impl::ExcludeDispatchKeyGuard no_autocast(
      c10::DispatchKeySet({c10::DispatchKey::AutocastCPU, c10::DispatchKey::AutocastCUDA}));
  const at::Tensor hidden = hidden_in.contiguous(), weight = weight_in.contiguous(), labels = labels_in.contiguous();
  const int64_t rows = hidden.size(0), vocab = weight.size(0), step = rows_per_chunk(chunk_rows, vocab);
  std::vector<at::Tensor> chunk_losses;
  at::Tensor grad_hidden = with_grad ? at::empty_like(hidden) : at::Tensor();
  at::Tensor grad_weight = with_grad ? at::zeros(weight.sizes(), weight.options().dtype(at::kFloat)) : at::Tensor();
  for (int64_t start = 0; start < rows; start += step) {
    const int64_t n = std::min(step, rows - start);
    const at::Tensor h = hidden.narrow(0, start, n);
    const at::Tensor logits = at::mm(h, weight.t());
    auto [losses, dlogits] = call_rows(logits, labels.narrow(0, start, n), ignore_index, with_grad);
    chunk_losses.push_back(losses);
    if (with_grad) {
      at::Tensor grad_rows = grad_hidden.narrow(0, start, n);
      at::mm_out(grad_rows, dlogits, weight);
      if (weight.scalar_type() == at::kFloat) {
        grad_weight.addmm_(dlogits.t(), h);
      } else {
        grad_weight.add_(at::mm(dlogits.t(), h));  // the GEMM in the compute dtype, the sum in fp32
      }
    }
  }
  const at::Tensor loss = chunk_losses.empty() ? at::zeros({}, hidden.options().dtype(at::kFloat))
                                               : at::cat(chunk_losses).sum();
  return {loss, grad_hidden, with_grad ? grad_weight.to(weight.scalar_type()) : at::Tensor()};
}

at::Tensor head_loss(const at::Tensor& hidden, const at::Tensor& weight, const at::Tensor& labels, int64_t ignore_index,
                     int64_t chunk_rows) {
  return std::get<0>(head_forward(hidden, weight, labels, ignore_index, chunk_rows, /*with_grad=*/false));
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> call_head_forward(const at::Tensor& hidden, const at::Tensor& weight,
                                                                 const at::Tensor& labels, int64_t ignore_index,
                                                                 int64_t chunk_rows, bool with_grad) {
  using Signature = std::tuple<at::Tensor, at::Tensor, at::Tensor>(const at::Tensor&, const at::Tensor&,
                                                                   const at::Tensor&, int64_t, int64_t, bool);
  static const auto op = find_op<Signature>("latentmoe::linear_cross_entropy_forward");
  return op.call(hidden, weight, labels, ignore_index, chunk_rows, with_grad);
}

class LinearCrossEntropyFunction : public torch::autograd::Function<LinearCrossEntropyFunction> {
 public:
  static at::Tensor forward(torch::autograd::AutogradContext* ctx, const at::Tensor& hidden, const at::Tensor& weight,
                            const at::Tensor& labels, int64_t ignore_index, int64_t chunk_rows) {
    at::AutoDispatchBelowADInplaceOrView below_autograd;
    auto [loss, grad_hidden, grad_weight] =
        call_head_forward(hidden, weight, labels, ignore_index, chunk_rows, /*with_grad=*/true);
    ctx->save_for_backward({grad_hidden, grad_weight});
    return loss;
  }
  static torch::autograd::tensor_list backward(torch::autograd::AutogradContext* ctx,
                                               torch::autograd::tensor_list grads) {
    const auto saved = ctx->get_saved_variables();
    const at::Tensor& scale = grads[0];  // d(total loss) / d(this sum): a scalar
    return {saved[0] * scale.to(saved[0].scalar_type()), saved[1] * scale.to(saved[1].scalar_type()), at::Tensor(),
            at::Tensor(), at::Tensor()};
  }
};

at::Tensor head_loss_autograd(const at::Tensor& hidden, const at::Tensor& weight, const at::Tensor& labels,
                              int64_t ignore_index, int64_t chunk_rows) {
  if (!at::GradMode::is_enabled() || (!hidden.requires_grad() && !weight.requires_grad())) {
    at::AutoDispatchBelowADInplaceOrView below_autograd;
    return std::get<0>(call_head_forward(hidden, weight, labels, ignore_index, chunk_rows, /*with_grad=*/false));
  }
  return LinearCrossEntropyFunction::apply(hidden, weight, labels, ignore_index, chunk_rows);
}
}  // namespace

at::Tensor linear_cross_entropy_reference(const at::Tensor& hidden, const at::Tensor& weight, const at::Tensor& labels,
                                          int64_t ignore_index) {
  check_head_inputs(hidden, weight, labels);
  const at::Tensor log_probs = at::mm(hidden, weight.t()).to(at::kFloat).log_softmax(-1);
  const at::Tensor counted = labels != ignore_index;
  const at::Tensor safe = labels.masked_fill(counted.logical_not(), 0);
  return -(log_probs.gather(1, safe.unsqueeze(1)).squeeze(1) * counted).sum();
}

at::Tensor linear_cross_entropy(const at::Tensor& hidden, const at::Tensor& weight, const at::Tensor& labels,
                                int64_t ignore_index, int64_t chunk_rows) {
  using Signature = at::Tensor(const at::Tensor&, const at::Tensor&, const at::Tensor&, int64_t, int64_t);
  static const auto op = find_op<Signature>("latentmoe::linear_cross_entropy");
  return op.call(hidden, weight, labels, ignore_index, chunk_rows);
}

TORCH_LIBRARY_IMPL(latentmoe, CPU, m) { m.impl("cross_entropy_rows", &cross_entropy_rows_cpu); }

TORCH_LIBRARY_IMPL(latentmoe, CompositeExplicitAutograd, m) {
  m.impl("cross_entropy_rows", &cross_entropy_rows_aten);
  m.impl("linear_cross_entropy_forward", &head_forward);
  m.impl("linear_cross_entropy", &head_loss);
}

TORCH_LIBRARY_IMPL(latentmoe, Autograd, m) { m.impl("linear_cross_entropy", &head_loss_autograd); }

}  // namespace latentmoe::ops
