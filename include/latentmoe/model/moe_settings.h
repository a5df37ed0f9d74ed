// The keys of the built-in MoE layer types (`model.ffn.type`), torch-free so that the config
// loader, the counters and the planner see them. The section configures the FFN of the MoE
// layers (blocks from model.first_k_dense_replace on, when model.n_routed_experts > 0); the keys
// every router, the expert-parallel layout and the balancer share (n_routed_experts,
// num_experts_per_tok, norm_topk_prob) stay on the model section.
#pragma once

#include <cstdint>

#include "latentmoe/config/config.h"
#include "latentmoe/config/layer_choice.h"

namespace latentmoe::model {

// `deepseek_moe`: fine-grained routed SwiGLU experts plus always-on shared experts (DeepSeekMoE).
struct DeepSeekMoESettings : config::LayerSettingsOf<DeepSeekMoESettings> {
  int64_t moe_intermediate_size = 64;
  int64_t n_shared_experts = 1;
  void describe(config::FieldVisitor& v) override;
};

inline const DeepSeekMoESettings& deepseek_moe_settings(const config::ModelConfig& m) {
  return m.ffn.settings<DeepSeekMoESettings>();
}
inline DeepSeekMoESettings& deepseek_moe_settings(config::ModelConfig& m) {
  return m.ffn.settings<DeepSeekMoESettings>();
}

}  // namespace latentmoe::model
