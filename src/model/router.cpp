// Router: the fp32 gate GEMM, then one op for scoring, the biased group-limited top-k (groups
// outside the kept ones can never be chosen, as the released code's -inf mask), gate weights from
// the unbiased scores and the per-expert counts.
#include "latentmoe/model/router.h"

#include <ATen/record_function.h>
#include <c10/core/impl/LocalDispatchKeySet.h>

#include "latentmoe/ops/moe_router.h"

namespace latentmoe::model {

RouterImpl::RouterImpl(const config::ModelConfig& cfg_) : cfg(cfg_) {
  weight = register_parameter("weight", torch::empty({cfg.n_routed_experts, cfg.hidden_size}));
  e_score_correction_bias = register_buffer("e_score_correction_bias", torch::zeros({cfg.n_routed_experts}));
}

RouterOutput RouterImpl::forward(const torch::Tensor& x) {
  RECORD_FUNCTION("latentmoe.moe.router", c10::ArrayRef<const c10::IValue>{});
  // Gating stays in fp32 under bf16 autocast (DeepSeek-V3 keeps MoE gating in high precision).
  const c10::impl::ExcludeDispatchKeyGuard no_autocast(
      c10::DispatchKeySet({c10::DispatchKey::AutocastCPU, c10::DispatchKey::AutocastCUDA}));
  RouterOutput out;
  out.logits = torch::linear(x.to(torch::kFloat), weight.to(torch::kFloat));
  const bool sigmoid = cfg.scoring_func == "sigmoid";
  // Scores, biased group-limited top-k, gate weights and counts in one op (ops/moe_router.h).
  auto [ids, gates, scores, counts] = ops::moe_router(
      out.logits, e_score_correction_bias.to(torch::kFloat),
      {.top_k = cfg.num_experts_per_tok, .n_group = cfg.n_group, .topk_group = cfg.topk_group, .sigmoid = sigmoid,
       .normalize = cfg.norm_topk_prob, .scaling = cfg.routed_scaling_factor});
  out.expert_ids = ids;
  out.expert_counts = counts;
  out.gate_weights = gates;
  out.token_scores = sigmoid ? scores / scores.sum(-1, /*keepdim=*/true) : scores;
  return out;
}

}  // namespace latentmoe::model
