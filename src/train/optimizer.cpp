// AdamW with decoupled weight decay and bias correction, in place on the master weights.
#include "latentmoe/train/optimizer.h"

#include <fmt/format.h>

#include <cmath>
#include <stdexcept>

#include "latentmoe/train/adamw_cpu.h"

namespace latentmoe::train {

AdamW::AdamW(const std::vector<std::pair<std::string, torch::Tensor>>& named_params, const config::OptimizerConfig& cfg)
    : cfg_(cfg) {
  for (const auto& [name, p] : named_params) {
    if (!p.requires_grad()) continue;
    const bool decay = cfg.decay_1d_params || p.dim() >= 2;
    if (!p.is_contiguous()) throw std::invalid_argument(fmt::format("AdamW: parameter '{}' is not contiguous", name));
    const auto moments = [&] { return torch::zeros({p.numel()}, p.options().dtype(moments_dtype())); };
    slots_.push_back({name, p, moments(), moments(), decay, 0, p.numel()});
  }
}

torch::ScalarType AdamW::moments_dtype() const {
  if (cfg_.moments_dtype == "fp32") return torch::kFloat;
  if (cfg_.moments_dtype == "bf16") return torch::kBFloat16;
  throw std::invalid_argument(fmt::format("optimizer.moments_dtype must be fp32 or bf16, got '{}'", cfg_.moments_dtype));
}

void AdamW::restrict_to_ranges(const std::vector<std::pair<int64_t, int64_t>>& ranges) {
  if (ranges.size() != slots_.size()) throw std::invalid_argument("AdamW::restrict_to_ranges: one range per parameter");
  for (size_t i = 0; i < slots_.size(); ++i) {
    auto& s = slots_[i];
    const auto [begin, length] = ranges[i];
    if (begin < 0 || length < 0 || begin + length > s.param.numel()) {
      throw std::invalid_argument(fmt::format("AdamW: range [{}, +{}) outside '{}' ({} elements)", begin, length, s.name,
                                              s.param.numel()));
    }
    s.begin = begin;
    s.length = length;
    // Only the owned range keeps moments: this is the memory ZeRO-1 saves.
    s.exp_avg = torch::zeros({length}, s.param.options().dtype(moments_dtype()));
    s.exp_avg_sq = torch::zeros({length}, s.param.options().dtype(moments_dtype()));
  }
}

AdamW::SlotView AdamW::slot(size_t i) const {
  const auto& s = slots_.at(i);
  return {s.name, s.param, s.exp_avg, s.exp_avg_sq, s.begin, s.length};
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

void AdamW::step(double lr, double grad_scale) {
  torch::NoGradGuard no_grad;
  ++steps_;
  const double bc1 = 1.0 - std::pow(cfg_.beta1, static_cast<double>(steps_));
  const double bc2 = 1.0 - std::pow(cfg_.beta2, static_cast<double>(steps_));
  for (auto& s : slots_) {
    if (s.length == 0 || !s.param.grad().defined()) continue;
    torch::Tensor param = s.param.view(-1).narrow(0, s.begin, s.length);
    const bool decays = s.decay && cfg_.weight_decay != 0.0;
    const torch::Tensor grad = s.param.grad().reshape(-1).narrow(0, s.begin, s.length);
    if (adamw_cpu_applies(param, grad, s.exp_avg, s.exp_avg_sq)) {
      const AdamWScalars scalars{.decay_factor = static_cast<float>(decays ? 1.0 - lr * cfg_.weight_decay : 1.0),
                                 .one_minus_beta1 = static_cast<float>(1.0 - cfg_.beta1),
                                 .beta2 = static_cast<float>(cfg_.beta2),
                                 .one_minus_beta2 = static_cast<float>(1.0 - cfg_.beta2),
                                 .inv_sqrt_bias_correction2 = static_cast<float>(1.0 / std::sqrt(bc2)),
                                 .eps = static_cast<float>(cfg_.eps),
                                 .neg_step_size = static_cast<float>(-lr / bc1),
                                 .grad_scale = static_cast<float>(grad_scale)};
      adamw_cpu_update(param, grad, s.exp_avg, s.exp_avg_sq, scalars);
      continue;
    }
    torch::Tensor g = grad.to(torch::kFloat);
    if (grad_scale != 1.0) g = g * grad_scale;
    if (decays) param.mul_(1.0 - lr * cfg_.weight_decay);
    // bf16 moments (optimizer.moments_dtype): the update in fp32, the moments rounded once after it.
    const bool narrow = s.exp_avg.scalar_type() != torch::kFloat;
    torch::Tensor m = narrow ? s.exp_avg.to(torch::kFloat) : s.exp_avg;
    torch::Tensor v = narrow ? s.exp_avg_sq.to(torch::kFloat) : s.exp_avg_sq;
    m.lerp_(g, 1.0 - cfg_.beta1);
    v.mul_(cfg_.beta2).addcmul_(g, g, 1.0 - cfg_.beta2);
    const torch::Tensor denom = (v.sqrt() / std::sqrt(bc2)).add_(cfg_.eps);
    param.addcdiv_(m, denom, -lr / bc1);
    if (narrow) {
      s.exp_avg.copy_(m);
      s.exp_avg_sq.copy_(v);
    }
  }
}

std::map<std::string, torch::Tensor> AdamW::state() const {
  std::map<std::string, torch::Tensor> out;
  for (const auto& s : slots_) {
    for (const auto& [key, moment] : {std::pair{"exp_avg.", s.exp_avg}, std::pair{"exp_avg_sq.", s.exp_avg_sq}}) {
      // fp32 whatever optimizer.moments_dtype is, so checkpoints resume under either setting.
      torch::Tensor full = s.length == s.param.numel() ? moment.to(torch::kFloat).view_as(s.param)
                                                       : torch::zeros_like(s.param, torch::kFloat);
      if (s.length != s.param.numel()) full.view(-1).narrow(0, s.begin, s.length).copy_(moment);
      out.emplace(key + s.name, full);
    }
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
    s.exp_avg.copy_(state.at("exp_avg." + s.name).reshape(-1).narrow(0, s.begin, s.length));
    s.exp_avg_sq.copy_(state.at("exp_avg_sq." + s.name).reshape(-1).narrow(0, s.begin, s.length));
  }
  steps_ = step->second.item<int64_t>();
}

}  // namespace latentmoe::train
