// `model.router.type: sinkhorn` (docs/extending.md walks through this file). Training: the
// affinities exp(logits) of a micro-batch's tokens are scaled by Sinkhorn-Knopp so that every
// token has mass 1/tokens and every expert 1/experts, and each token takes the top-k of its
// balanced row: a near-equal load per expert with no auxiliary loss and no bias (the S-BASE idea,
// arXiv 2202.01169, and Megatron-Core's `sinkhorn` load balancing). The balancing only chooses;
// the gate weights are the plain softmax probabilities of the chosen experts, so gradients reach
// the router as in softmax top-k. Evaluation and generation (no batch to balance) pick the plain
// top-k. The balancing bias buffer, when trained, shifts the selection in the log domain.
#include <ATen/record_function.h>
#include <c10/core/impl/LocalDispatchKeySet.h>

#include "latentmoe/model/layer_registry.h"
#include "latentmoe/model/router.h"
#include "sinkhorn_router_settings.h"

namespace latentmoe::model {

namespace {

// log of the per-expert scaling d1 of Sinkhorn-Knopp on exp(logits) [tokens, experts]: the
// balanced matrix is d0_i * exp(logit_ij) * d1_j, and a token's ranking of its row is that of
// logit_ij + log d1_j (d0_i is the same along the row). Log domain, so large logits cannot overflow.
torch::Tensor sinkhorn_expert_log_scaling(const torch::Tensor& logits, int64_t iterations, double tolerance) {
  const int64_t tokens = logits.size(0), experts = logits.size(1);
  const double log_token_mass = -std::log(static_cast<double>(tokens));
  const double log_expert_mass = -std::log(static_cast<double>(experts));
  torch::Tensor log_d0 = torch::zeros({tokens, 1}, logits.options());
  torch::Tensor log_d1 = torch::zeros({1, experts}, logits.options());
  // The convergence test reads a value back (a device sync on a GPU): every kCheckEvery sweeps.
  constexpr int64_t kCheckEvery = 4;
  for (int64_t i = 0; i < iterations; ++i) {
    log_d0 = log_token_mass - torch::logsumexp(logits + log_d1, 1, /*keepdim=*/true);
    const torch::Tensor next = log_expert_mass - torch::logsumexp(logits + log_d0, 0, /*keepdim=*/true);
    const bool check = (i + 1) % kCheckEvery == 0;
    const double change = check ? (next - log_d1).exp().sub(1).abs().mean().item<double>() : 1.0;
    log_d1 = next;
    if (check && change < tolerance) break;
  }
  return log_d1.squeeze(0);
}

// The gate weight, its init and the fp32 logits come from LinearGateRouter (router.h).
class SinkhornRouterImpl : public LinearGateRouter {
 public:
  SinkhornRouterImpl(const RouterOptions& options, const SinkhornRouterSettings& settings)
      : LinearGateRouter(options), options_(options), settings_(settings) {}

  RouterOutput forward(const torch::Tensor& x) override {
    RECORD_FUNCTION("latentmoe.moe.router", c10::ArrayRef<const c10::IValue>{});
    const c10::impl::ExcludeDispatchKeyGuard no_autocast(
        c10::DispatchKeySet({c10::DispatchKey::AutocastCPU, c10::DispatchKey::AutocastCUDA}));
    RouterOutput out;
    out.logits = gate_logits(x);  // [tokens, E] fp32
    const torch::Tensor probs = torch::softmax(out.logits, -1);
    torch::Tensor selection = out.logits.detach() + e_score_correction_bias.to(torch::kFloat);
    if (is_training() && out.logits.size(0) > 0) {
      selection = selection + sinkhorn_expert_log_scaling(out.logits.detach(), settings_.iterations,
                                                          settings_.tolerance);
    }
    out.expert_ids = std::get<1>(selection.topk(options_.top_k(), /*dim=*/-1));  // best first
    out.gate_weights = probs.gather(1, out.expert_ids);
    if (options_.normalize()) out.gate_weights = out.gate_weights / out.gate_weights.sum(-1, /*keepdim=*/true);
    out.expert_counts = torch::bincount(out.expert_ids.flatten(), /*weights=*/{}, probs.size(1));
    out.token_scores = probs;
    return out;
  }

 private:
  RouterOptions options_;
  SinkhornRouterSettings settings_;
};

const bool registered = register_router("sinkhorn", [](const config::ModelConfig& cfg) -> std::shared_ptr<RouterLayer> {
  return std::make_shared<SinkhornRouterImpl>(RouterOptions::from_config(cfg), sinkhorn_router_settings(cfg));
});

}  // namespace

}  // namespace latentmoe::model
