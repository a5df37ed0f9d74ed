// Training losses from a model output: next-token CE, MTP CE per depth (weighted lambda/D),
// the sequence-wise balance loss (alpha * sum_i f_i * P_i per sequence and MoE layer) and the
// router z-loss. Each component is returned separately for logging.
#pragma once

#include <torch/types.h>

#include <vector>

#include "latentmoe/config/config.h"
#include "latentmoe/model/deepseek_v3.h"

namespace latentmoe::train {

struct LossBreakdown {
  torch::Tensor total;            // what backward() runs on
  double lm = 0, mtp = 0, balance = 0, z = 0;  // detached values (mtp = mean CE over depths)
};

// tokens [batch, seq + 1]: inputs are tokens[:, :seq], labels tokens[:, 1:]; MTP depth k
// predicts tokens[:, k+1:]. Labels equal to ignore_label (>= 0: FIM's pad token) are left out of
// every cross entropy, as Megatron's loss mask leaves out padding.
LossBreakdown compute_losses(const model::ModelOutput& out, const torch::Tensor& tokens, const config::Config& cfg,
                             double mtp_weight, int64_t ignore_label = -1);

// Cross entropy in fp32 over [N, vocab] logits without keeping a second full-vocabulary copy
// beyond log-softmax's own (the logits are upcast row-chunk by row-chunk when not fp32); the mean
// is over the labels that are not kIgnoredLabel.
inline constexpr int64_t kIgnoredLabel = -100;  // torch's default ignore_index
torch::Tensor cross_entropy(const torch::Tensor& logits, const torch::Tensor& labels);

// The same mean cross entropy of the LM head's logits for final-norm outputs `head_input`
// [..., hidden] without materializing the logits (latentmoe::linear_cross_entropy, chunked over
// rows). `head_weight` is already in the compute dtype (the autocast dtype under autocast).
torch::Tensor head_cross_entropy(const torch::Tensor& head_input, const torch::Tensor& head_weight,
                                 const torch::Tensor& labels);
// The head weight in the dtype GEMMs run in here: the autocast dtype inside an autocast region.
torch::Tensor head_weight_for_compute(const torch::Tensor& head_weight);

// alpha * mean over sequences of sum_i f_i P_i for one MoE layer's routing.
torch::Tensor sequence_balance_loss(const model::RouterOutput& routing, int64_t batch, int64_t seq,
                                    int64_t n_experts, int64_t top_k);

}  // namespace latentmoe::train
