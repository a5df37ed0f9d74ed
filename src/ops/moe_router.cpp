// moe_router: reference, CPU kernel (one token per loop iteration: scores, group choice, top-k
// by insertion, gates; per-chunk count histograms summed in order), backward, autograd, dispatch.
#include "latentmoe/ops/moe_router.h"

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/autograd.h>
#include <torch/library.h>

#include <cmath>
#include <limits>
#include <vector>

#include "ops/cpu_kernel_util.h"
#include "ops/op_checks.h"
#include "ops/op_handle.h"

namespace latentmoe::ops {

namespace {
using Outputs = std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor>;
using OptionalTensor = std::optional<at::Tensor>;
constexpr float kNegInf = -std::numeric_limits<float>::infinity();

// Inserts (value, id) into the best-first list of length n (capacity k); ties keep the earlier id.
inline void insert_best(float value, int64_t id, float* values, int64_t* ids, int64_t& n, int64_t k) {
  if (n == k && !(value > values[k - 1])) return;
  int64_t pos = n < k ? n++ : k - 1;
  while (pos > 0 && value > values[pos - 1]) {
    values[pos] = values[pos - 1];
    ids[pos] = ids[pos - 1];
    --pos;
  }
  values[pos] = value;
  ids[pos] = id;
}

// The vectorizable per-token loops, compiled for AVX2+FMA and the baseline.
LMOE_CPU_CLONES void sigmoid_scores(const float* logits, const float* bias, float* scores, float* choice,
                                    int64_t experts) {
  for (int64_t e = 0; e < experts; ++e) {
    scores[e] = 1.0f / (1.0f + cpu::fast_exp(-logits[e]));
    choice[e] = scores[e] + bias[e];
  }
}

LMOE_CPU_CLONES void sigmoid_backward(const float* ds, const float* s, float* dl, int64_t experts) {
  for (int64_t e = 0; e < experts; ++e) dl[e] = ds[e] * s[e] * (1.0f - s[e]);
}

// Per-thread scratch of route_token.
struct Scratch {
  std::vector<float> choice, group_best, best;
  std::vector<int64_t> group_ids;
  std::vector<char> kept;
};

void route_token(const float* logits, const float* bias, int64_t experts, const RouterChoice& c, float* scores,
                 int64_t* ids, float* gates, Scratch& w) {
  float* choice = w.choice.data();
  if (c.sigmoid) {
    sigmoid_scores(logits, bias, scores, choice, experts);
  } else {
    float max = kNegInf, sum = 0.0f;
    for (int64_t e = 0; e < experts; ++e) max = std::max(max, logits[e]);
    for (int64_t e = 0; e < experts; ++e) sum += scores[e] = std::exp(logits[e] - max);
    for (int64_t e = 0; e < experts; ++e) {
      scores[e] /= sum;
      choice[e] = scores[e] + bias[e];
    }
  }
  const int64_t per_group = experts / c.n_group;
  std::fill(w.kept.begin(), w.kept.end(), c.n_group == 1 ? 1 : 0);
  if (c.n_group > 1) {
    int64_t n = 0;
    const int64_t take = c.sigmoid ? std::min<int64_t>(2, per_group) : 1;
    for (int64_t g = 0; g < c.n_group; ++g) {
      float best[2] = {kNegInf, kNegInf};
      int64_t unused[2], m = 0;
      for (int64_t e = g * per_group; e < (g + 1) * per_group; ++e) insert_best(choice[e], e, best, unused, m, take);
      const float score = take == 2 ? best[0] + best[1] : best[0];
      insert_best(score, g, w.group_best.data(), w.group_ids.data(), n, c.topk_group);
    }
    for (int64_t j = 0; j < n; ++j) w.kept[static_cast<size_t>(w.group_ids[j])] = 1;
  }
  int64_t n = 0;
  for (int64_t e = 0; e < experts; ++e) {
    if (w.kept[static_cast<size_t>(e / per_group)]) insert_best(choice[e], e, w.best.data(), ids, n, c.top_k);
  }
  float sum = 0.0f;
  for (int64_t j = 0; j < c.top_k; ++j) sum += gates[j] = scores[ids[j]];
  const float scale = static_cast<float>(c.scaling) / (c.normalize ? sum + 1e-20f : 1.0f);
  for (int64_t j = 0; j < c.top_k; ++j) gates[j] *= scale;
}

Outputs router_cpu(const at::Tensor& logits_in, const at::Tensor& bias_in, int64_t top_k, int64_t n_group,
                   int64_t topk_group, bool sigmoid, bool normalize, double scaling) {
  check_moe_router_inputs(logits_in, bias_in, top_k, n_group, topk_group);
  const RouterChoice c{top_k, n_group, topk_group, sigmoid, normalize, scaling};
  const at::Tensor logits = logits_in.contiguous(), bias = bias_in.contiguous();
  const int64_t tokens = logits.size(0), experts = logits.size(1);
  at::Tensor scores = at::empty_like(logits);
  at::Tensor ids = at::empty({tokens, top_k}, logits.options().dtype(at::kLong));
  at::Tensor gates = at::empty({tokens, top_k}, logits.options());
  constexpr int64_t kChunk = 256;  // tokens per histogram: fixed, so the counts never depend on threads
  const int64_t chunks = (tokens + kChunk - 1) / kChunk;
  std::vector<int64_t> histograms(static_cast<size_t>(std::max<int64_t>(chunks, 1) * experts), 0);
  const float* lp = logits.const_data_ptr<float>();
  const float* bp = bias.const_data_ptr<float>();
  float* sp = scores.mutable_data_ptr<float>();
  int64_t* ip = ids.mutable_data_ptr<int64_t>();
  float* gp = gates.mutable_data_ptr<float>();
  at::parallel_for(0, chunks, 1, [&](int64_t begin, int64_t end) {
    Scratch w{.choice = std::vector<float>(static_cast<size_t>(experts)),
              .group_best = std::vector<float>(static_cast<size_t>(topk_group)),
              .best = std::vector<float>(static_cast<size_t>(top_k)),
              .group_ids = std::vector<int64_t>(static_cast<size_t>(topk_group)),
              .kept = std::vector<char>(static_cast<size_t>(n_group))};
    for (int64_t chunk = begin; chunk < end; ++chunk) {
      int64_t* histogram = histograms.data() + chunk * experts;
      for (int64_t t = chunk * kChunk; t < std::min(tokens, (chunk + 1) * kChunk); ++t) {
        route_token(lp + t * experts, bp, experts, c, sp + t * experts, ip + t * top_k, gp + t * top_k, w);
        for (int64_t j = 0; j < top_k; ++j) ++histogram[ip[t * top_k + j]];
      }
    }
  });
  at::Tensor counts = at::zeros({experts}, logits.options().dtype(at::kLong));
  int64_t* cp = counts.mutable_data_ptr<int64_t>();
  for (int64_t chunk = 0; chunk < chunks; ++chunk) {
    for (int64_t e = 0; e < experts; ++e) cp[e] += histograms[static_cast<size_t>(chunk * experts + e)];
  }
  return {ids, gates, scores, counts};
}

// d logits from d gates (through the gather, the normalization and the scaling) and d scores.
at::Tensor router_backward_cpu(const OptionalTensor& grad_gates_in, const OptionalTensor& grad_scores_in,
                               const at::Tensor& scores_in, const at::Tensor& ids_in, bool sigmoid, bool normalize,
                               double scaling) {
  const at::Tensor scores = scores_in.contiguous(), ids = ids_in.contiguous();
  const int64_t tokens = scores.size(0), experts = scores.size(1), top_k = ids.size(1);
  const bool has_gates = grad_gates_in && grad_gates_in->defined();
  const bool has_scores = grad_scores_in && grad_scores_in->defined();
  const at::Tensor dg = has_gates ? grad_gates_in->to(at::kFloat).contiguous() : at::Tensor();
  const at::Tensor dsc = has_scores ? grad_scores_in->to(at::kFloat).contiguous() : at::Tensor();
  at::Tensor grad = at::empty_like(scores);
  const float* sp = scores.const_data_ptr<float>();
  const int64_t* ip = ids.const_data_ptr<int64_t>();
  float* out = grad.mutable_data_ptr<float>();
  const float c = static_cast<float>(scaling);
  at::parallel_for(0, tokens, 64, [&](int64_t begin, int64_t end) {
    std::vector<float> ds(static_cast<size_t>(experts));
    for (int64_t t = begin; t < end; ++t) {
      const float* s = sp + t * experts;
      for (int64_t e = 0; e < experts; ++e) ds[e] = has_scores ? dsc.const_data_ptr<float>()[t * experts + e] : 0.0f;
      if (has_gates) {
        const float* g = dg.const_data_ptr<float>() + t * top_k;
        const int64_t* id = ip + t * top_k;
        if (normalize) {
          float sum = 0.0f, dot = 0.0f;
          for (int64_t j = 0; j < top_k; ++j) sum += s[id[j]];
          sum += 1e-20f;
          for (int64_t j = 0; j < top_k; ++j) dot += g[j] * s[id[j]];
          for (int64_t j = 0; j < top_k; ++j) ds[id[j]] += c * (g[j] / sum - dot / (sum * sum));
        } else {
          for (int64_t j = 0; j < top_k; ++j) ds[id[j]] += c * g[j];
        }
      }
      float* dl = out + t * experts;
      if (sigmoid) {
        sigmoid_backward(ds.data(), s, dl, experts);
      } else {
        float dot = 0.0f;
        for (int64_t e = 0; e < experts; ++e) dot += ds[e] * s[e];
        for (int64_t e = 0; e < experts; ++e) dl[e] = s[e] * (ds[e] - dot);
      }
    }
  });
  return grad;
}

Outputs router_aten(const at::Tensor& logits, const at::Tensor& bias, int64_t top_k, int64_t n_group,
                    int64_t topk_group, bool sigmoid, bool normalize, double scaling) {
  check_moe_router_inputs(logits, bias, top_k, n_group, topk_group);
  const int64_t tokens = logits.size(0), experts = logits.size(1);
  const at::Tensor scores = sigmoid ? at::sigmoid(logits) : at::softmax(logits, -1);
  at::Tensor choice = scores.detach() + bias;
  if (n_group > 1) {
    const int64_t per_group = experts / n_group;
    const at::Tensor grouped = choice.view({tokens, n_group, per_group});
    const at::Tensor group_scores = sigmoid ? std::get<0>(grouped.topk(std::min<int64_t>(2, per_group), -1)).sum(-1)
                                            : std::get<0>(grouped.max(-1));
    const at::Tensor kept = std::get<1>(group_scores.topk(topk_group, -1));
    const at::Tensor group_mask = at::zeros_like(group_scores, at::kBool).scatter_(1, kept, true);
    const at::Tensor mask = group_mask.unsqueeze(-1).expand({tokens, n_group, per_group}).reshape({tokens, experts});
    choice = choice.masked_fill(mask.logical_not(), kNegInf);
  }
  const at::Tensor ids = std::get<1>(choice.topk(top_k, -1));
  at::Tensor gates = scores.gather(1, ids);
  if (normalize) gates = gates / (gates.sum(-1, /*keepdim=*/true) + 1e-20);
  gates = gates * scaling;
  const at::Tensor counts = at::bincount(ids.reshape(-1), {}, experts);
  return {ids, gates, scores, counts};
}

at::Tensor router_backward_aten(const OptionalTensor& grad_gates, const OptionalTensor& grad_scores,
                                const at::Tensor& scores, const at::Tensor& ids, bool sigmoid, bool normalize,
                                double scaling) {
  at::Tensor ds = grad_scores && grad_scores->defined() ? grad_scores->to(at::kFloat).clone() : at::zeros_like(scores);
  if (grad_gates && grad_gates->defined()) {
    const at::Tensor s = scores.gather(1, ids), g = grad_gates->to(at::kFloat);
    at::Tensor dsel = g * scaling;
    if (normalize) {
      const at::Tensor sum = s.sum(-1, true) + 1e-20;
      dsel = scaling * (g / sum - (g * s).sum(-1, true) / (sum * sum));
    }
    ds = ds.scatter_add(1, ids, dsel);
  }
  if (sigmoid) return ds * scores * (1 - scores);
  return scores * (ds - (ds * scores).sum(-1, true));
}

Outputs call_router(const at::Tensor& logits, const at::Tensor& bias, const RouterChoice& c) {
  using Signature = Outputs(const at::Tensor&, const at::Tensor&, int64_t, int64_t, int64_t, bool, bool, double);
  static const auto op = find_op<Signature>("latentmoe::moe_router");
  return op.call(logits, bias, c.top_k, c.n_group, c.topk_group, c.sigmoid, c.normalize, c.scaling);
}

class RouterFunction : public torch::autograd::Function<RouterFunction> {
 public:
  static torch::autograd::variable_list forward(torch::autograd::AutogradContext* ctx, const at::Tensor& logits,
                                                const at::Tensor& bias, int64_t top_k, int64_t n_group,
                                                int64_t topk_group, bool sigmoid, bool normalize, double scaling) {
    at::AutoDispatchBelowADInplaceOrView below_autograd;
    auto [ids, gates, scores, counts] =
        call_router(logits, bias.detach(), {top_k, n_group, topk_group, sigmoid, normalize, scaling});
    ctx->save_for_backward({scores, ids});
    ctx->saved_data["sigmoid"] = sigmoid;
    ctx->saved_data["normalize"] = normalize;
    ctx->saved_data["scaling"] = scaling;
    return {ids, gates, scores, counts};
  }
  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grads) {
    const auto saved = ctx->get_saved_variables();
    using Signature = at::Tensor(const OptionalTensor&, const OptionalTensor&, const at::Tensor&, const at::Tensor&,
                                 bool, bool, double);
    static const auto op = find_op<Signature>("latentmoe::moe_router_backward");
    const OptionalTensor dg = grads[1].defined() ? OptionalTensor(grads[1]) : std::nullopt;
    const OptionalTensor ds = grads[2].defined() ? OptionalTensor(grads[2]) : std::nullopt;
    at::Tensor grad = op.call(dg, ds, saved[0], saved[1], ctx->saved_data["sigmoid"].toBool(),
                              ctx->saved_data["normalize"].toBool(), ctx->saved_data["scaling"].toDouble());
    return {grad, at::Tensor(), at::Tensor(), at::Tensor(), at::Tensor(), at::Tensor(), at::Tensor(), at::Tensor()};
  }
};

Outputs router_autograd(const at::Tensor& logits, const at::Tensor& bias, int64_t top_k, int64_t n_group,
                        int64_t topk_group, bool sigmoid, bool normalize, double scaling) {
  const auto out = RouterFunction::apply(logits, bias, top_k, n_group, topk_group, sigmoid, normalize, scaling);
  return {out[0], out[1], out[2], out[3]};
}
}  // namespace

Outputs moe_router(const at::Tensor& logits, const at::Tensor& bias, const RouterChoice& choice) {
  return call_router(logits, bias, choice);
}

Outputs moe_router_reference(const at::Tensor& logits, const at::Tensor& bias, const RouterChoice& c) {
  return router_aten(logits, bias, c.top_k, c.n_group, c.topk_group, c.sigmoid, c.normalize, c.scaling);
}

TORCH_LIBRARY_IMPL(latentmoe, CPU, m) {
  m.impl("moe_router", &router_cpu);
  m.impl("moe_router_backward", &router_backward_cpu);
}

TORCH_LIBRARY_IMPL(latentmoe, CompositeExplicitAutograd, m) {
  m.impl("moe_router", &router_aten);
  m.impl("moe_router_backward", &router_backward_aten);
}

TORCH_LIBRARY_IMPL(latentmoe, Autograd, m) { m.impl("moe_router", &router_autograd); }

}  // namespace latentmoe::ops
