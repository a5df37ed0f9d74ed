// AdamW with decoupled weight decay and bias correction, in place on the master weights.
#include "latentmoe/train/optimizer.h"

#include <fmt/format.h>

#include <cmath>
#include <stdexcept>

namespace latentmoe::train {

AdamW::AdamW(const std::vector<std::pair<std::string, torch::Tensor>>& named_params, const config::OptimizerConfig& cfg)
    : cfg_(cfg) {
  for (const auto& [name, p] : named_params) {
    if (!p.requires_grad()) continue;
    const bool decay = cfg.decay_1d_params || p.dim() >= 2;
    slots_.push_back({name, p, torch::zeros_like(p, torch::kFloat), torch::zeros_like(p, torch::kFloat), decay});
  }
}

void AdamW::restrict_to(const std::function<bool(size_t)>& owned) {
  for (size_t i = 0; i < slots_.size(); ++i) {
    slots_[i].owned = owned(i);
    if (!slots_[i].owned) {  // free the moments: this is the memory ZeRO-1 saves
      slots_[i].exp_avg = torch::Tensor();
      slots_[i].exp_avg_sq = torch::Tensor();
    }
  }
}

bool AdamW::owns(const std::string& name) const {
  for (const auto& s : slots_) {
    if (s.name == name) return s.owned;
  }
  return false;
}

bool AdamW::decays(const std::string& name) const {
  for (const auto& s : slots_) {
    if (s.name == name) return s.decay;
  }
  return false;
}

void AdamW::zero_grad() {
  for (auto& s : slots_) s.param.mutable_grad().reset();
}

void AdamW::step(double lr) {
  torch::NoGradGuard no_grad;
  ++steps_;
  const double bc1 = 1.0 - std::pow(cfg_.beta1, static_cast<double>(steps_));
  const double bc2 = 1.0 - std::pow(cfg_.beta2, static_cast<double>(steps_));
  for (auto& s : slots_) {
    if (!s.owned || !s.param.grad().defined()) continue;
    const torch::Tensor g = s.param.grad().to(torch::kFloat);
    if (s.decay && cfg_.weight_decay != 0.0) s.param.mul_(1.0 - lr * cfg_.weight_decay);
    s.exp_avg.lerp_(g, 1.0 - cfg_.beta1);
    s.exp_avg_sq.mul_(cfg_.beta2).addcmul_(g, g, 1.0 - cfg_.beta2);
    const torch::Tensor denom = (s.exp_avg_sq.sqrt() / std::sqrt(bc2)).add_(cfg_.eps);
    s.param.addcdiv_(s.exp_avg, denom, -lr / bc1);
  }
}

std::map<std::string, torch::Tensor> AdamW::state() const {
  std::map<std::string, torch::Tensor> out;
  for (const auto& s : slots_) {
    out.emplace("exp_avg." + s.name, s.owned ? s.exp_avg : torch::zeros_like(s.param, torch::kFloat));
    out.emplace("exp_avg_sq." + s.name, s.owned ? s.exp_avg_sq : torch::zeros_like(s.param, torch::kFloat));
  }
  out.emplace("step", torch::tensor({steps_}, torch::kLong));
  return out;
}

void AdamW::load_state(const std::map<std::string, torch::Tensor>& state) {
  const auto find = [&](const std::string& key, const torch::Tensor& like) -> const torch::Tensor& {
    const auto it = state.find(key);
    if (it == state.end()) throw std::runtime_error(fmt::format("optimizer state: missing tensor '{}'", key));
    if (it->second.sizes() != like.sizes()) {
      throw std::runtime_error(fmt::format("optimizer state: tensor '{}' has the wrong shape", key));
    }
    return it->second;
  };
  for (const auto& s : slots_) {
    find("exp_avg." + s.name, s.param);
    find("exp_avg_sq." + s.name, s.param);
  }
  const auto step = state.find("step");
  if (step == state.end()) throw std::runtime_error("optimizer state: missing tensor 'step'");
  torch::NoGradGuard no_grad;
  for (auto& s : slots_) {
    if (!s.owned) continue;
    s.exp_avg.copy_(state.at("exp_avg." + s.name));
    s.exp_avg_sq.copy_(state.at("exp_avg_sq." + s.name));
  }
  steps_ = step->second.item<int64_t>();
}

}  // namespace latentmoe::train
