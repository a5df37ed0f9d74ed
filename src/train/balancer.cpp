// The bias update rule and the load statistics of one optimizer step.
#include "latentmoe/train/balancer.h"

namespace latentmoe::train {

ExpertBalancer::ExpertBalancer(std::vector<torch::Tensor> biases, double gamma, int64_t freeze_after_tokens)
    : biases_(std::move(biases)), gamma_(gamma), freeze_after_tokens_(freeze_after_tokens) {
  const int64_t experts = biases_.empty() ? 0 : biases_[0].numel();
  counts_ = torch::zeros({static_cast<int64_t>(biases_.size()), experts}, torch::kLong);
}

void ExpertBalancer::add_counts(size_t layer, const torch::Tensor& expert_counts) {
  counts_[static_cast<int64_t>(layer)] += expert_counts.to(torch::kCPU);
}

std::vector<LayerLoadStats> ExpertBalancer::step(int64_t tokens_seen) {
  torch::NoGradGuard no_grad;
  const bool frozen = freeze_after_tokens_ > 0 && tokens_seen >= freeze_after_tokens_;
  std::vector<LayerLoadStats> stats;
  for (size_t l = 0; l < biases_.size(); ++l) {
    const torch::Tensor counts = counts_[static_cast<int64_t>(l)].contiguous();
    const torch::Tensor load = counts.to(torch::kDouble);
    const double mean = load.mean().item<double>();
    LayerLoadStats s;
    s.load.assign(counts.data_ptr<int64_t>(), counts.data_ptr<int64_t>() + counts.numel());
    if (mean > 0) s.max_violation = (load.max().item<double>() - mean) / mean;
    if (gamma_ != 0.0 && !frozen && mean > 0) {
      const torch::Tensor update = torch::sign(mean - load).to(biases_[l].scalar_type()) * gamma_;
      biases_[l].add_(update.to(biases_[l].device()));
    }
    s.bias_min = biases_[l].min().item<double>();
    s.bias_max = biases_[l].max().item<double>();
    stats.push_back(s);
  }
  counts_.zero_();
  return stats;
}

}  // namespace latentmoe::train
