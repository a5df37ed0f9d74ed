// Losses. The balance loss follows the paper: f_i = N_r/(K_r T) * #tokens routed to i in the
// sequence, P_i = mean over the sequence's tokens of the normalized score s'_{i,t}.
#include "latentmoe/train/losses.h"

#include <ATen/autocast_mode.h>
#include <torch/nn/functional/loss.h>

#include "latentmoe/ops/linear.h"
#include "latentmoe/ops/linear_cross_entropy.h"

namespace latentmoe::train {

torch::Tensor cross_entropy(const torch::Tensor& logits, const torch::Tensor& labels) {
  const int64_t counted = (labels != kIgnoredLabel).sum().item<int64_t>();
  // All labels ignored (a row of FIM padding at an MTP depth): 0, not torch's 0/0.
  if (counted == 0) return (logits * 0.0).sum().to(torch::kFloat);
  if (logits.scalar_type() == torch::kFloat) return torch::nn::functional::cross_entropy(logits, labels);
  // Low-precision logits: fp32 log-softmax on chunks of rows keeps one fp32 chunk alive at a time.
  constexpr int64_t kRows = 4096;
  torch::Tensor total = torch::zeros({}, logits.options().dtype(torch::kFloat));
  for (int64_t start = 0; start < logits.size(0); start += kRows) {
    const int64_t n = std::min(kRows, logits.size(0) - start);
    total = total + torch::nn::functional::cross_entropy(
                        logits.narrow(0, start, n).to(torch::kFloat), labels.narrow(0, start, n),
                        torch::nn::functional::CrossEntropyFuncOptions().reduction(torch::kSum));
  }
  return total / static_cast<double>(counted);
}

torch::Tensor head_weight_for_compute(const torch::Tensor& head_weight) {
  const c10::DeviceType device = head_weight.device().type();
  if (!at::autocast::is_autocast_enabled(device)) return head_weight;
  // No native low-precision GEMMs here: fp32 GEMMs on the rounded weight (the rows get the same).
  if (const auto emulated = ops::emulated_autocast_dtype(device)) return ops::rounded_to(head_weight, *emulated);
  return head_weight.to(at::autocast::get_autocast_dtype(device));
}

torch::Tensor head_cross_entropy(const torch::Tensor& head_input, const torch::Tensor& head_weight,
                                 const torch::Tensor& labels) {
  torch::Tensor rows = head_input.reshape({-1, head_input.size(-1)});
  if (const auto emulated = ops::emulated_autocast_dtype(rows.device().type())) rows = ops::rounded_to(rows, *emulated);
  rows = rows.to(head_weight.scalar_type());
  const torch::Tensor flat_labels = labels.reshape(-1);
  const int64_t counted = (flat_labels != kIgnoredLabel).sum().item<int64_t>();
  const torch::Tensor sum = ops::linear_cross_entropy(rows, head_weight, flat_labels, kIgnoredLabel);
  return counted == 0 ? sum : sum / static_cast<double>(counted);  // all ignored: the zero sum, graph kept
}

torch::Tensor sequence_balance_loss(const model::RouterOutput& routing, int64_t batch, int64_t seq, int64_t n_experts,
                                    int64_t top_k) {
  const torch::Tensor chosen = torch::zeros({batch * seq, n_experts}, routing.token_scores.options())
                                   .scatter_(1, routing.expert_ids, 1.0)
                                   .view({batch, seq, n_experts});
  const torch::Tensor f = chosen.sum(1) * (static_cast<double>(n_experts) / static_cast<double>(top_k * seq));
  const torch::Tensor p = routing.token_scores.view({batch, seq, n_experts}).mean(1);
  return (f * p).sum(-1).mean();
}

LossBreakdown compute_losses(const model::ModelOutput& out, const torch::Tensor& input_tokens, const config::Config& cfg,
                             double mtp_weight, int64_t ignore_label) {
  const auto& m = cfg.model;
  const torch::Tensor tokens = ignore_label >= 0 ? input_tokens.masked_fill(input_tokens == ignore_label, kIgnoredLabel) : input_tokens;
  const int64_t batch = tokens.size(0), seq = tokens.size(1) - 1;
  LossBreakdown b;
  const bool fused_head = !out.logits.defined();
  const torch::Tensor head_weight = fused_head ? head_weight_for_compute(out.head_weight) : torch::Tensor();
  const auto lm_loss = [&](const torch::Tensor& logits, const torch::Tensor& head_input, const torch::Tensor& labels) {
    return fused_head ? head_cross_entropy(head_input, head_weight, labels)
                      : cross_entropy(logits.reshape({-1, m.vocab_size}), labels.reshape(-1));
  };
  const torch::Tensor lm = lm_loss(out.logits, out.head_input, tokens.narrow(1, 1, seq));
  torch::Tensor total = lm;
  b.lm = lm.item<double>();
  const size_t depths = fused_head ? out.mtp_head_inputs.size() : out.mtp_logits.size();
  if (depths > 0) {
    torch::Tensor mtp_sum = torch::zeros({}, lm.options());
    for (size_t k = 0; k < depths; ++k) {
      const int64_t depth = static_cast<int64_t>(k) + 1;
      const int64_t len = seq - depth;
      mtp_sum = mtp_sum + lm_loss(fused_head ? torch::Tensor() : out.mtp_logits[k],
                                  fused_head ? out.mtp_head_inputs[k] : torch::Tensor(),
                                  tokens.narrow(1, depth + 1, len));
    }
    const double depth_count = static_cast<double>(depths);
    b.mtp = mtp_sum.item<double>() / depth_count;
    if (mtp_weight != 0.0) total = total + mtp_sum * (mtp_weight / depth_count);
  }
  if (cfg.train.seq_aux_loss_alpha > 0 || cfg.train.router_z_loss_weight > 0) {
    torch::Tensor balance = torch::zeros({}, lm.options()), z = torch::zeros({}, lm.options());
    for (const auto& r : out.routing) {
      const int64_t tokens_in_layer = r.expert_ids.size(0);
      const int64_t layer_seq = tokens_in_layer / batch;  // MTP layers see seq - k tokens per row
      if (cfg.train.seq_aux_loss_alpha > 0) {
        balance = balance + sequence_balance_loss(r, batch, layer_seq, m.n_routed_experts, m.num_experts_per_tok);
      }
      if (cfg.train.router_z_loss_weight > 0) z = z + torch::logsumexp(r.logits, -1).pow(2).mean();
    }
    b.balance = balance.item<double>() * cfg.train.seq_aux_loss_alpha;
    b.z = z.item<double>() * cfg.train.router_z_loss_weight;
    total = total + balance * cfg.train.seq_aux_loss_alpha + z * cfg.train.router_z_loss_weight;
  }
  b.total = total;
  return b;
}

}  // namespace latentmoe::train
