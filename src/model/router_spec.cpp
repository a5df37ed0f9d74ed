// `model.router.type: deepseek_v3 | softmax_topk`, their torch-free half: keys, counter, rules.
// The modules are src/model/router.cpp.
#include <fmt/format.h>

#include "latentmoe/model/checked_count.h"
#include "latentmoe/model/router_settings.h"

namespace latentmoe::model {

void DeepSeekRouterSettings::describe(config::FieldVisitor& v) {
  v.field({"n_group", &n_group, "Expert groups for group-limited routing (1 = plain top-k)"});
  v.field({"topk_group", &topk_group, "Groups kept per token before the expert top-k"});
  v.field({"routed_scaling_factor", &routed_scaling_factor, "Multiplier on the routed experts' gate weights"});
  v.field({"scoring_func", &scoring_func, "Router affinity function", {"sigmoid", "softmax"}});
}

namespace {

// Both built-in routers hold one gate weight [n_routed_experts, hidden].
config::LayerCounts count_gate(const config::ModelConfig& m) {
  return {.parameters = (Count(m.n_routed_experts) * m.hidden_size).value()};
}

void validate_deepseek(const config::ModelConfig& m, std::vector<std::string>& out) {
  if (m.n_routed_experts <= 0) return;
  const DeepSeekRouterSettings& r = deepseek_router_settings(m);
  const auto require = [&out](bool ok, std::string message) {
    if (!ok) out.push_back(std::move(message));
  };
  require(r.routed_scaling_factor > 0,
          fmt::format("model.router.routed_scaling_factor must be > 0, got {}", r.routed_scaling_factor));
  require(r.n_group > 0, fmt::format("model.router.n_group must be > 0, got {}", r.n_group));
  require(r.topk_group > 0, fmt::format("model.router.topk_group must be > 0, got {}", r.topk_group));
  if (r.n_group <= 0 || r.topk_group <= 0) return;
  require(m.n_routed_experts % r.n_group == 0,
          fmt::format("model.n_routed_experts ({}) must be divisible by model.router.n_group ({}): "
                      "group-limited routing splits experts into equal groups",
                      m.n_routed_experts, r.n_group));
  require(r.topk_group <= r.n_group,
          fmt::format("model.router.topk_group ({}) must be <= model.router.n_group ({})", r.topk_group, r.n_group));
  const int64_t per_group = m.n_routed_experts / r.n_group;
  require(r.topk_group * per_group >= m.num_experts_per_tok,
          fmt::format("model.num_experts_per_tok ({}) is unreachable: model.router.topk_group ({}) groups of "
                      "model.n_routed_experts/model.router.n_group ({}/{} = {}) experts keep only {}",
                      m.num_experts_per_tok, r.topk_group, m.n_routed_experts, r.n_group, per_group,
                      r.topk_group * per_group));
  if (r.scoring_func == "sigmoid" && r.n_group > 1) {
    require(per_group >= 2, fmt::format("model.n_routed_experts/model.router.n_group ({}/{}) must be >= 2 with "
                                        "model.router.scoring_func 'sigmoid': a group scores as its top-2 experts",
                                        m.n_routed_experts, r.n_group));
  }
}

const bool registered = [] {
  config::register_layer_type({.family = "router",
                               .name = "deepseek_v3",
                               .doc = "DeepSeek-V3 (sigmoid) or V2 (softmax) affinities, group-limited top-k on "
                                      "bias-corrected scores, scaled gate weights",
                               .make_settings = [] { return std::make_unique<DeepSeekRouterSettings>(); },
                               .count = count_gate,
                               .validate = validate_deepseek});
  config::register_layer_type({.family = "router",
                               .name = "softmax_topk",
                               .doc = "Softmax over all experts and a plain top-k (Qwen3-MoE, Mixtral); gate weights "
                                      "renormalized when model.norm_topk_prob",
                               .make_settings = [] { return std::make_unique<SoftmaxTopkRouterSettings>(); },
                               .count = count_gate,
                               .validate = nullptr});
  return true;
}();

}  // namespace

}  // namespace latentmoe::model
