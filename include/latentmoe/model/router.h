// The router seam (`model.router.type`; layer_registry.h makes one) and the built-in routers.
// Every router holds the per-expert balancing bias as a persistent buffer, updated by the
// trainer's auxiliary-loss-free rule (train.bias_update_speed), never by gradients; it steers the
// SELECTION only.
#pragma once

#include <torch/nn/module.h>
#include <torch/nn/pimpl.h>

#include "latentmoe/config/config.h"
#include "latentmoe/model/init.h"
#include "latentmoe/model/router_settings.h"

namespace latentmoe::model {

struct RouterOutput {
  torch::Tensor expert_ids;     // [tokens, top_k] int64
  torch::Tensor gate_weights;   // [tokens, top_k] fp32, differentiable w.r.t. the router weight
  torch::Tensor expert_counts;  // [n_routed_experts] int64: assignments per expert (the load)
  torch::Tensor token_scores;   // [tokens, n_routed_experts] fp32 scores normalized per token (s'),
                                // for the sequence-wise balance loss; differentiable
  torch::Tensor logits;         // [tokens, n_routed_experts] fp32, for the router z-loss
};

// What every router type gets from the model section.
struct RouterOptions {
  // model.hidden_size, n_routed_experts, num_experts_per_tok, norm_topk_prob.
  static RouterOptions from_config(const config::ModelConfig& cfg);
  TORCH_ARG(int64_t, hidden_size) = 0;
  TORCH_ARG(int64_t, experts) = 0;
  TORCH_ARG(int64_t, top_k) = 1;
  TORCH_ARG(bool, normalize) = true;  // renormalize the chosen gate weights to sum to 1
};

class RouterLayer : public torch::nn::Module {
 public:
  explicit RouterLayer(int64_t n_routed_experts);
  // x [tokens, hidden]
  virtual RouterOutput forward(const torch::Tensor& x) = 0;

  torch::Tensor e_score_correction_bias;  // [n_routed_experts] fp32 buffer
};
TORCH_MODULE_IMPL(Router, RouterLayer);

// A router scored by one linear gate: holds the gate weight, initializes it, and computes the
// gate logits in fp32 whatever the autocast (DeepSeek-V3 keeps MoE gating in high precision).
// The built-in routers and the sinkhorn example derive from it; a router with other parameters
// derives from RouterLayer and ParameterInit directly.
class LinearGateRouter : public RouterLayer, public ParameterInit {
 public:
  explicit LinearGateRouter(const RouterOptions& options);
  void reset_own_parameters(double init_std, const ParameterRng& rng) override;
  // x [tokens, hidden] -> [tokens, n_routed_experts] fp32
  torch::Tensor gate_logits(const torch::Tensor& x) const;

  torch::Tensor weight;  // [n_routed_experts, hidden]
};

// `deepseek_v3`: sigmoid (V3) or softmax (V2) affinities in fp32; group-limited top-k where the
// SELECTION uses score + correction bias and the GATE WEIGHTS use the unbiased score (normalized
// if norm_topk_prob, times routed_scaling_factor).
struct DeepSeekRouterOptions {
  static DeepSeekRouterOptions from_config(const config::ModelConfig& cfg);
  TORCH_ARG(RouterOptions, router);
  TORCH_ARG(DeepSeekRouterSettings, settings);  // model.router's keys
};

class DeepSeekRouterImpl : public LinearGateRouter {
 public:
  explicit DeepSeekRouterImpl(const DeepSeekRouterOptions& options);
  RouterOutput forward(const torch::Tensor& x) override;

  DeepSeekRouterOptions options;
};
TORCH_MODULE(DeepSeekRouter);

// `softmax_topk`: softmax over all experts, top-k of the (bias-corrected) probabilities, gate
// weights = the chosen probabilities, renormalized if norm_topk_prob. Qwen3-MoE, Mixtral.
class SoftmaxTopkRouterImpl : public LinearGateRouter {
 public:
  explicit SoftmaxTopkRouterImpl(const RouterOptions& options);
  RouterOutput forward(const torch::Tensor& x) override;

  RouterOptions options;
};
TORCH_MODULE(SoftmaxTopkRouter);

}  // namespace latentmoe::model
