// DeepSeekMoE router: sigmoid (V3) or softmax (V2) affinities in fp32; group-limited top-k where
// the SELECTION uses score + correction bias and the GATE WEIGHTS use the unbiased score
// (normalized if norm_topk_prob, times routed_scaling_factor). The bias is a persistent buffer
// updated by the trainer's balancing rule, never by gradients.
#pragma once

#include <torch/nn/module.h>
#include <torch/nn/pimpl.h>

#include "latentmoe/config/config.h"

namespace latentmoe::model {

struct RouterOutput {
  torch::Tensor expert_ids;     // [tokens, top_k] int64
  torch::Tensor gate_weights;   // [tokens, top_k] fp32, differentiable w.r.t. the router weight
  torch::Tensor expert_counts;  // [n_routed_experts] int64: assignments per expert (the load)
  torch::Tensor token_scores;   // [tokens, n_routed_experts] fp32 scores normalized per token (s'),
                                // for the sequence-wise balance loss; differentiable
  torch::Tensor logits;         // [tokens, n_routed_experts] fp32, for the router z-loss
};

class RouterImpl : public torch::nn::Module {
 public:
  explicit RouterImpl(const config::ModelConfig& cfg);
  // x [tokens, hidden]
  RouterOutput forward(const torch::Tensor& x);

  config::ModelConfig cfg;
  torch::Tensor weight;                   // [n_routed_experts, hidden]
  torch::Tensor e_score_correction_bias;  // [n_routed_experts] fp32 buffer
};
TORCH_MODULE(Router);

}  // namespace latentmoe::model
