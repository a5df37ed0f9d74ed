// Router: fp32 scoring, group masking with -inf (the released code's choice), top-k selection on
// biased scores without gradient, gate weights gathered from the unbiased scores.
#include "latentmoe/model/router.h"

#include <ATen/record_function.h>
#include <c10/core/impl/LocalDispatchKeySet.h>

#include <limits>

#include "latentmoe/ops/expert_counts.h"

namespace latentmoe::model {

RouterImpl::RouterImpl(const config::ModelConfig& cfg_) : cfg(cfg_) {
  weight = register_parameter("weight", torch::empty({cfg.n_routed_experts, cfg.hidden_size}));
  e_score_correction_bias = register_buffer("e_score_correction_bias", torch::zeros({cfg.n_routed_experts}));
}

RouterOutput RouterImpl::forward(const torch::Tensor& x) {
  RECORD_FUNCTION("latentmoe.moe.router", c10::ArrayRef<const c10::IValue>{});
  const int64_t experts = cfg.n_routed_experts;
  // Gating stays in fp32 under bf16 autocast (DeepSeek-V3 keeps MoE gating in high precision).
  const c10::impl::ExcludeDispatchKeyGuard no_autocast(
      c10::DispatchKeySet({c10::DispatchKey::AutocastCPU, c10::DispatchKey::AutocastCUDA}));
  RouterOutput out;
  out.logits = torch::linear(x.to(torch::kFloat), weight.to(torch::kFloat));
  const bool sigmoid = cfg.scoring_func == "sigmoid";
  const torch::Tensor scores = sigmoid ? torch::sigmoid(out.logits) : torch::softmax(out.logits, -1);
  {
    torch::NoGradGuard no_grad;
    torch::Tensor choice = scores + e_score_correction_bias.to(torch::kFloat);
    if (cfg.n_group > 1) {
      const int64_t tokens = choice.size(0), per_group = experts / cfg.n_group;
      const torch::Tensor grouped = choice.view({tokens, cfg.n_group, per_group});
      // V3: a group scores as the sum of its top-2 biased scores; V2 (softmax): its best score.
      const torch::Tensor group_scores =
          sigmoid ? std::get<0>(grouped.topk(std::min<int64_t>(2, per_group), -1)).sum(-1) : std::get<0>(grouped.max(-1));
      const torch::Tensor kept = std::get<1>(group_scores.topk(cfg.topk_group, -1, /*largest=*/true, /*sorted=*/false));
      const torch::Tensor group_mask = torch::zeros_like(group_scores, torch::kBool).scatter_(1, kept, true);
      const torch::Tensor expert_mask = group_mask.unsqueeze(-1).expand({tokens, cfg.n_group, per_group}).reshape({tokens, experts});
      choice = choice.masked_fill(expert_mask.logical_not(), -std::numeric_limits<float>::infinity());
    }
    out.expert_ids = std::get<1>(choice.topk(cfg.num_experts_per_tok, -1, /*largest=*/true, /*sorted=*/false));
    out.expert_counts = ops::expert_token_counts(out.expert_ids, experts);
  }
  torch::Tensor gates = scores.gather(1, out.expert_ids);
  if (cfg.norm_topk_prob) gates = gates / (gates.sum(-1, /*keepdim=*/true) + 1e-20);
  out.gate_weights = gates * cfg.routed_scaling_factor;
  out.token_scores = sigmoid ? scores / scores.sum(-1, /*keepdim=*/true) : scores;
  return out;
}

}  // namespace latentmoe::model
