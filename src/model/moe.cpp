// MoE forward: permute tokens by expert with a stable sort, run each expert on its slice, then
// weighted unpermute with index_add. Deterministic: same routing → same summation order.
#include "latentmoe/model/moe.h"

#include <ATen/record_function.h>
#include <fmt/format.h>

#include <stdexcept>

namespace latentmoe::model {

MoEImpl::MoEImpl(const config::ModelConfig& cfg_) : cfg(cfg_) {
  gate = register_module("gate", Router(cfg));
  experts = register_module("experts", std::make_shared<torch::nn::Module>("Experts"));
  for (int64_t e = 0; e < cfg.n_routed_experts; ++e) {
    local_experts_.push_back(experts->register_module(std::to_string(e), MLP(MLPOptions(cfg.hidden_size, cfg.moe_intermediate_size))));
  }
  if (cfg.n_shared_experts > 0) {
    shared_experts = register_module(
        "shared_experts", MLP(MLPOptions(cfg.hidden_size, cfg.moe_intermediate_size * cfg.n_shared_experts)));
  }
}

torch::Tensor MoEImpl::run_experts(const torch::Tensor& sorted, int64_t first, const std::vector<int64_t>& counts) {
  std::vector<torch::Tensor> outputs;
  int64_t offset = 0;
  for (size_t j = 0; j < counts.size(); ++j) {
    if (counts[j] == 0) continue;
    outputs.push_back(expert(first + static_cast<int64_t>(j)).forward(sorted.narrow(0, offset, counts[j])));
    offset += counts[j];
  }
  if (outputs.empty()) return sorted.narrow(0, 0, 0);
  return torch::cat(outputs, 0);
}

MLPImpl& MoEImpl::expert(int64_t e) {
  if (e < first_local_ || e >= first_local_ + local_expert_count()) {
    throw std::out_of_range(fmt::format("MoE: expert {} is not held here (this module holds experts [{}, {}))", e,
                                        first_local_, first_local_ + local_expert_count()));
  }
  return *local_experts_[static_cast<size_t>(e - first_local_)];
}

void MoEImpl::retain_experts(int64_t first, int64_t count) {
  if (first < first_local_ || count < 0 || first + count > first_local_ + local_expert_count()) {
    throw std::out_of_range(fmt::format("MoE: cannot retain experts [{}, {}) from the held range [{}, {})", first,
                                        first + count, first_local_, first_local_ + local_expert_count()));
  }
  auto kept = std::make_shared<torch::nn::Module>("Experts");
  std::vector<MLP> kept_list;
  for (int64_t e = first; e < first + count; ++e) {
    kept_list.push_back(kept->register_module(std::to_string(e), local_experts_[static_cast<size_t>(e - first_local_)]));
  }
  experts = replace_module("experts", kept);
  local_experts_ = std::move(kept_list);
  first_local_ = first;
}

torch::Tensor MoEImpl::routed_experts(const torch::Tensor& tokens, const RouterOutput& routing) {
  if (dispatcher) return dispatcher->routed_experts(*this, tokens, routing);
  if (tokens.size(0) == 0) return torch::zeros_like(tokens);
  const int64_t top_k = routing.expert_ids.size(1);
  torch::Tensor order, source_token, sorted;
  std::vector<int64_t> per_expert;
  {
    RECORD_FUNCTION("latentmoe.moe.dispatch", c10::ArrayRef<const c10::IValue>{});
    order = routing.expert_ids.reshape(-1).argsort(/*stable=*/true);
    source_token = order.div(top_k, "floor");
    const torch::Tensor counts = routing.expert_counts.cpu();
    per_expert.assign(counts.data_ptr<int64_t>(), counts.data_ptr<int64_t>() + counts.numel());
    sorted = tokens.index_select(0, source_token);
  }
  const torch::Tensor expert_out = run_experts(sorted, 0, per_expert);
  RECORD_FUNCTION("latentmoe.moe.combine", c10::ArrayRef<const c10::IValue>{});
  const torch::Tensor weights = routing.gate_weights.reshape(-1).index_select(0, order).unsqueeze(1);
  return torch::zeros_like(tokens, expert_out.scalar_type())  // bf16 under autocast
      .index_add(0, source_token, expert_out * weights.to(expert_out.scalar_type()))
      .to(tokens.scalar_type());
}

MoEOutput MoEImpl::forward(const torch::Tensor& x) {
  const torch::Tensor tokens = x.reshape({-1, cfg.hidden_size});
  MoEOutput out;
  out.routing = gate(tokens);
  torch::Tensor hidden = routed_experts(tokens, out.routing);
  if (shared_experts) hidden = hidden + shared_experts(tokens);
  out.hidden = hidden.view(x.sizes());
  return out;
}

}  // namespace latentmoe::model
