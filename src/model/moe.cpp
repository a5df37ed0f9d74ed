// MoE forward: permute tokens by expert with a stable sort, run the experts as grouped GEMMs over
// their stacked weights, then the gate-weighted unpermute (a token's choices summed in order).
// Deterministic: same routing → same summation order.
#include "latentmoe/model/moe.h"

#include "latentmoe/model/layer_registry.h"

#include <ATen/record_function.h>
#include <fmt/format.h>
#include <torch/autograd.h>

#include <array>
#include <stdexcept>

#include "latentmoe/model/recompute.h"
#include "latentmoe/ops/fp8_linear.h"
#include "latentmoe/ops/grouped_linear.h"
#include "latentmoe/ops/moe_permute.h"
#include "latentmoe/ops/swiglu.h"

namespace latentmoe::model {

namespace {
using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

// The stacked weights of experts [first, first + n) as a differentiable function of their
// per-expert parameters, without a copy: the parameters are views into the stack, and the
// stack's gradient goes back to each parameter as a view of it. An expert that received no rows
// gets no gradient, so the optimizer treats it as a per-expert loop would (it did not run).
class StackedExpertWeights : public torch::autograd::Function<StackedExpertWeights> {
 public:
  // params: gate, up, down of each expert in order; gate_up [n, 2I, H] and down [n, H, I] hold them.
  static variable_list forward(AutogradContext* ctx, at::TensorList params, const torch::Tensor& gate_up,
                               const torch::Tensor& down, std::vector<int64_t> rows) {
    ctx->saved_data["rows"] = rows;
    ctx->saved_data["width"] = gate_up.size(1) / 2;
    return {gate_up.detach(), down.detach()};
  }
  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    const std::vector<int64_t> rows = ctx->saved_data["rows"].toIntVector();
    const int64_t width = ctx->saved_data["width"].toInt();
    variable_list out;
    for (size_t e = 0; e < rows.size(); ++e) {
      const int64_t i = static_cast<int64_t>(e);
      const bool ran = rows[e] > 0;
      out.push_back(ran && grads[0].defined() ? grads[0][i].narrow(0, 0, width) : torch::Tensor());
      out.push_back(ran && grads[0].defined() ? grads[0][i].narrow(0, width, width) : torch::Tensor());
      out.push_back(ran && grads[1].defined() ? grads[1][i] : torch::Tensor());
    }
    out.resize(out.size() + 3);  // gate_up, down (not differentiable) and rows
    return out;
  }
};
}  // namespace

DeepSeekMoEOptions DeepSeekMoEOptions::from_config(const config::ModelConfig& cfg) {
  return DeepSeekMoEOptions().hidden_size(cfg.hidden_size).experts(cfg.n_routed_experts).settings(
      deepseek_moe_settings(cfg));
}

DeepSeekMoEImpl::DeepSeekMoEImpl(const DeepSeekMoEOptions& options_, Router gate_) : options(options_) {
  const int64_t hidden = options.hidden_size(), width = options.settings().moe_intermediate_size;
  gate = register_module("gate", std::move(gate_));
  experts = register_module("experts", std::make_shared<torch::nn::Module>("Experts"));
  const ExpertShard& held = options.held();
  const int64_t count = held.count < 0 ? options.experts() - held.first : held.count;
  TORCH_CHECK(held.first >= 0 && count >= 0 && held.first + count <= options.experts(), "DeepSeekMoE: experts [",
              held.first, ", ", held.first + count, ") are not within the ", options.experts(), " routed experts");
  for (int64_t e = held.first; e < held.first + count; ++e) {
    local_experts_.push_back(experts->register_module(std::to_string(e), MLP(MLPOptions(hidden, width))));
  }
  if (const int64_t shared = options.settings().n_shared_experts; shared > 0) {
    shared_experts = register_module("shared_experts", MLP(MLPOptions(hidden, width * shared)));
  }
  stack_expert_weights();
}

void DeepSeekMoEImpl::set_selective_recompute(bool on) {
  recompute_activation = on;
  if (shared_experts) shared_experts->recompute_activation = on;
}

namespace {
const bool registered = register_ffn("deepseek_moe", [](const config::ModelConfig& cfg, const MoEBuild& build) {
  return std::make_shared<DeepSeekMoEImpl>(DeepSeekMoEOptions::from_config(cfg).held(build.experts),
                                           Router(make_router(cfg)));
});
}  // namespace

std::array<std::pair<torch::Tensor*, torch::Tensor>, 3> DeepSeekMoEImpl::stacked_views(int64_t i, const torch::Tensor& gate_up,
                                                                             const torch::Tensor& down) const {
  const int64_t width = options.settings().moe_intermediate_size;
  MLPImpl& mlp = *local_experts_[static_cast<size_t>(i)].ptr();
  return {{{&mlp.gate_proj->weight, gate_up[i].narrow(0, 0, width)},
           {&mlp.up_proj->weight, gate_up[i].narrow(0, width, width)},
           {&mlp.down_proj->weight, down[i]}}};
}

void DeepSeekMoEImpl::stack_expert_weights() {
  torch::NoGradGuard no_grad;
  const int64_t n = local_expert_count(), width = options.settings().moe_intermediate_size;
  if (n == 0) {
    experts_gate_up = experts_down = torch::Tensor();
    return;
  }
  const torch::TensorOptions like = local_experts_[0]->gate_proj->weight.options();
  torch::Tensor gate_up = torch::empty({n, 2 * width, options.hidden_size()}, like);
  torch::Tensor down = torch::empty({n, options.hidden_size(), width}, like);
  for (int64_t i = 0; i < n; ++i) {
    for (const auto& [param, view] : stacked_views(i, gate_up, down)) {
      view.copy_(*param);
      param->set_data(view);
    }
  }
  experts_gate_up = gate_up;
  experts_down = down;
}

bool DeepSeekMoEImpl::expert_weights_stacked() const {
  const int64_t n = local_expert_count();
  if (n == 0) return true;
  if (!experts_gate_up.defined() || experts_gate_up.size(0) != n) return false;
  for (int64_t i = 0; i < n; ++i) {
    for (const auto& [param, view] : stacked_views(i, experts_gate_up, experts_down)) {
      if (param->data_ptr() != view.data_ptr() || !param->options().type_equal(view.options()) ||
          param->sizes() != view.sizes() || param->strides() != view.strides()) {
        return false;
      }
    }
  }
  return true;
}

torch::Tensor DeepSeekMoEImpl::run_experts(const torch::Tensor& sorted, int64_t first, const std::vector<int64_t>& counts) {
  const int64_t n = static_cast<int64_t>(counts.size());
  if (first < first_local_expert() || first + n > first_local_expert() + local_expert_count()) {
    throw std::out_of_range(fmt::format("MoE: experts [{}, {}) are not all held here (this module holds [{}, {}))",
                                        first, first + n, first_local_expert(), first_local_expert() + local_expert_count()));
  }
  if (sorted.size(0) == 0 || n == 0) return sorted.narrow(0, 0, 0);
  if (!expert_weights_stacked()) stack_expert_weights();
  variable_list params;
  for (int64_t e = first; e < first + n; ++e) {
    MLPImpl& mlp = expert(e);
    params.insert(params.end(), {mlp.gate_proj->weight, mlp.up_proj->weight, mlp.down_proj->weight});
  }
  const int64_t offset = first - first_local_expert();
  const variable_list stacked = StackedExpertWeights::apply(at::TensorList(params), experts_gate_up.narrow(0, offset, n),
                                                            experts_down.narrow(0, offset, n), counts);
  const ops::fp8::Recipe recipe = fp8;
  const std::string name = fp8_name + ".experts";
  // By value: the recompute region reruns in the backward, after this function returned.
  const auto grouped = [recipe, name](const torch::Tensor& x, const torch::Tensor& w,
                                        const std::vector<int64_t>& sizes, const char* projection) {
    return recipe.enabled() ? ops::fp8::grouped_linear(x, w, sizes, recipe, name + projection)
                            : ops::grouped_linear(x, w, sizes);
  };
  const Region activation = [counts, grouped, recipe](const variable_list& in) -> variable_list {
    const torch::Tensor gate_up = grouped(in[0], in[1], counts, ".gate_up");  // [rows, 2 x intermediate]
    return {recipe.enabled() ? ops::fp8::swiglu_packed(gate_up, recipe) : ops::swiglu_packed(gate_up)};
  };
  const torch::Tensor act = recompute_active(recompute_activation, is_training())
                                ? recomputed(activation, {sorted, stacked[0]})[0]
                                : activation({sorted, stacked[0]})[0];
  return grouped(act, stacked[1], counts, ".down");
}

MLPImpl& DeepSeekMoEImpl::expert(int64_t e) {
  if (e < first_local_expert() || e >= first_local_expert() + local_expert_count()) {
    throw std::out_of_range(fmt::format("MoE: expert {} is not held here (this module holds experts [{}, {}))", e,
                                        first_local_expert(), first_local_expert() + local_expert_count()));
  }
  return *local_experts_[static_cast<size_t>(e - first_local_expert())];
}

torch::Tensor DeepSeekMoEImpl::routed_experts(const torch::Tensor& tokens, const RouterOutput& routing) {
  if (dispatcher) return dispatcher->routed_experts(*this, tokens, routing);
  if (tokens.size(0) == 0) return torch::zeros_like(tokens);
  const int64_t top_k = routing.expert_ids.size(1);
  torch::Tensor positions, sorted;
  std::vector<int64_t> per_expert;
  {
    RECORD_FUNCTION("latentmoe.moe.dispatch", c10::ArrayRef<const c10::IValue>{});
    // A stable sort: within an expert, rows keep token order (deterministic grouping).
    positions = ops::moe_positions(routing.expert_ids.reshape(-1).argsort(/*stable=*/true), top_k);
    const torch::Tensor counts = routing.expert_counts.cpu();
    per_expert.assign(counts.data_ptr<int64_t>(), counts.data_ptr<int64_t>() + counts.numel());
    sorted = ops::moe_permute(tokens, positions);
  }
  const torch::Tensor expert_out = run_experts(sorted, 0, per_expert);
  RECORD_FUNCTION("latentmoe.moe.combine", c10::ArrayRef<const c10::IValue>{});
  return ops::moe_unpermute(expert_out, positions, routing.gate_weights).to(tokens.scalar_type());
}

std::set<std::string> routed_expert_parameter_names(torch::nn::Module& root) {
  std::set<std::string> names;
  for (const auto& item : root.named_modules()) {
    const auto* moe = dynamic_cast<const DeepSeekMoEImpl*>(item.value().get());
    if (!moe) continue;
    const std::string prefix = item.key().empty() ? "experts" : item.key() + ".experts";
    for (const auto& p : moe->experts->named_parameters()) names.insert(prefix + "." + p.key());
  }
  return names;
}

MoEOutput DeepSeekMoEImpl::forward(const torch::Tensor& x) {
  const torch::Tensor tokens = x.reshape({-1, options.hidden_size()});
  MoEOutput out;
  out.routing = gate(tokens);
  torch::Tensor hidden = routed_experts(tokens, out.routing);
  if (shared_experts) hidden = hidden + shared_experts(tokens);
  out.hidden = hidden.view(x.sizes());
  return out;
}

}  // namespace latentmoe::model
