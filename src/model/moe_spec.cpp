// `model.ffn.type: deepseek_moe`, its torch-free half: keys, counter, rules. The module is
// src/model/moe.cpp.
#include <fmt/format.h>

#include "latentmoe/model/checked_count.h"
#include "latentmoe/model/moe_settings.h"

namespace latentmoe::model {

void DeepSeekMoESettings::describe(config::FieldVisitor& v) {
  v.field({"moe_intermediate_size", &moe_intermediate_size, "SwiGLU inner width of each routed and shared expert"});
  v.field({"n_shared_experts", &n_shared_experts,
           "Always-active shared experts per MoE layer (one SwiGLU of n_shared_experts x moe_intermediate_size)"});
}

namespace {

// Routed experts: n_routed_experts SwiGLUs (gate, up, down) of moe_intermediate_size, of which
// num_experts_per_tok run per token; the shared experts always run. The gate is the router's.
config::LayerCounts count_deepseek_moe(const config::ModelConfig& m) {
  const DeepSeekMoESettings& s = deepseek_moe_settings(m);
  const Count expert = Count(3) * m.hidden_size * s.moe_intermediate_size;
  const Count routed = Count(m.n_routed_experts) * expert, shared = Count(s.n_shared_experts) * expert;
  return {.parameters = (routed + shared).value(),
          .activated_parameters = (Count(m.num_experts_per_tok) * expert + shared).value(),
          .routed_parameters = routed.value()};
}

void validate_deepseek_moe(const config::ModelConfig& m, std::vector<std::string>& out) {
  const DeepSeekMoESettings& s = deepseek_moe_settings(m);
  if (s.n_shared_experts < 0) {
    out.push_back(fmt::format("model.ffn.n_shared_experts must be >= 0, got {}", s.n_shared_experts));
  }
  if (m.n_routed_experts > 0 && s.moe_intermediate_size <= 0) {
    out.push_back(fmt::format("model.ffn.moe_intermediate_size must be > 0, got {}", s.moe_intermediate_size));
  }
}

const bool registered = [] {
  config::register_layer_type({.family = "ffn",
                               .name = "deepseek_moe",
                               .doc = "DeepSeekMoE: fine-grained routed SwiGLU experts (dropless, grouped GEMMs) plus "
                                      "always-on shared experts",
                               .make_settings = [] { return std::make_unique<DeepSeekMoESettings>(); },
                               .count = count_deepseek_moe,
                               .validate = validate_deepseek_moe});
  return true;
}();

}  // namespace

}  // namespace latentmoe::model
