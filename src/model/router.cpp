// Routers: the fp32 gate GEMM (LinearGateRouter), then one op for scoring, the biased (group-limited) top-k (groups
// outside the kept ones can never be chosen, as the released code's -inf mask), gate weights from
// the unbiased scores and the per-expert counts. Registered as `model.router.type` deepseek_v3
// and softmax_topk; their keys and rules are src/model/router_spec.cpp.
#include "latentmoe/model/router.h"

#include <ATen/record_function.h>
#include <c10/core/impl/LocalDispatchKeySet.h>

#include "latentmoe/model/layer_registry.h"
#include "latentmoe/ops/moe_router.h"

namespace latentmoe::model {

namespace {
const c10::DispatchKeySet kAutocastKeys({c10::DispatchKey::AutocastCPU, c10::DispatchKey::AutocastCUDA});

// ops::moe_router on the fp32 gate logits, all of it outside autocast.
RouterOutput route(const LinearGateRouter& router, const torch::Tensor& x, const ops::RouterChoice& options) {
  RECORD_FUNCTION("latentmoe.moe.router", c10::ArrayRef<const c10::IValue>{});
  const c10::impl::ExcludeDispatchKeyGuard no_autocast(kAutocastKeys);
  RouterOutput out;
  out.logits = router.gate_logits(x);
  auto [ids, gates, scores, counts] =
      ops::moe_router(out.logits, router.e_score_correction_bias.to(torch::kFloat), options);
  out.expert_ids = ids;
  out.expert_counts = counts;
  out.gate_weights = gates;
  out.token_scores = options.sigmoid ? scores / scores.sum(-1, /*keepdim=*/true) : scores;
  return out;
}
}  // namespace

RouterOptions RouterOptions::from_config(const config::ModelConfig& cfg) {
  return RouterOptions()
      .hidden_size(cfg.hidden_size)
      .experts(cfg.n_routed_experts)
      .top_k(cfg.num_experts_per_tok)
      .normalize(cfg.norm_topk_prob);
}

DeepSeekRouterOptions DeepSeekRouterOptions::from_config(const config::ModelConfig& cfg) {
  return DeepSeekRouterOptions().router(RouterOptions::from_config(cfg)).settings(deepseek_router_settings(cfg));
}

RouterLayer::RouterLayer(int64_t n_routed_experts) {
  e_score_correction_bias = register_buffer("e_score_correction_bias", torch::zeros({n_routed_experts}));
}

LinearGateRouter::LinearGateRouter(const RouterOptions& options) : RouterLayer(options.experts()) {
  weight = register_parameter("weight", torch::empty({options.experts(), options.hidden_size()}, parameter_options()));
}

void LinearGateRouter::reset_own_parameters(double init_std, const ParameterRng& rng) {
  torch::NoGradGuard no_grad;
  weight.normal_(0.0, init_std, rng("weight"));
}

torch::Tensor LinearGateRouter::gate_logits(const torch::Tensor& x) const {
  const c10::impl::ExcludeDispatchKeyGuard no_autocast(kAutocastKeys);
  return torch::linear(x.to(torch::kFloat), weight.to(torch::kFloat));
}

DeepSeekRouterImpl::DeepSeekRouterImpl(const DeepSeekRouterOptions& options_)
    : LinearGateRouter(options_.router()), options(options_) {}

RouterOutput DeepSeekRouterImpl::forward(const torch::Tensor& x) {
  const DeepSeekRouterSettings& s = options.settings();
  return route(*this, x,
               {.top_k = options.router().top_k(), .n_group = s.n_group, .topk_group = s.topk_group,
                .sigmoid = s.scoring_func == "sigmoid", .normalize = options.router().normalize(),
                .scaling = s.routed_scaling_factor});
}

SoftmaxTopkRouterImpl::SoftmaxTopkRouterImpl(const RouterOptions& options_)
    : LinearGateRouter(options_), options(options_) {}

RouterOutput SoftmaxTopkRouterImpl::forward(const torch::Tensor& x) {
  // One group holding every expert: a plain top-k; no scaling.
  return route(*this, x,
               {.top_k = options.top_k(), .n_group = 1, .topk_group = 1, .sigmoid = false,
                .normalize = options.normalize(), .scaling = 1.0});
}

namespace {
const bool registered = register_router("deepseek_v3",
                                        [](const config::ModelConfig& cfg) -> std::shared_ptr<RouterLayer> {
                                          return std::make_shared<DeepSeekRouterImpl>(
                                              DeepSeekRouterOptions::from_config(cfg));
                                        }) &&
                        register_router("softmax_topk",
                                        [](const config::ModelConfig& cfg) -> std::shared_ptr<RouterLayer> {
                                          return std::make_shared<SoftmaxTopkRouterImpl>(
                                              RouterOptions::from_config(cfg));
                                        });
}  // namespace

}  // namespace latentmoe::model
