// The keys of the built-in router types (`model.router.type`), torch-free.
#pragma once

#include <string>

#include "latentmoe/config/config.h"
#include "latentmoe/config/layer_choice.h"

namespace latentmoe::model {

// `deepseek_v3`: sigmoid (V3) or softmax (V2) affinities, group-limited top-k over biased
// scores, gate weights from the unbiased scores times routed_scaling_factor.
struct DeepSeekRouterSettings : config::LayerSettingsOf<DeepSeekRouterSettings> {
  int64_t n_group = 4;
  int64_t topk_group = 2;
  double routed_scaling_factor = 2.5;
  std::string scoring_func = "sigmoid";  // sigmoid | softmax
  void describe(config::FieldVisitor& v) override;
};

// `softmax_topk`: softmax over all experts, plain top-k (no groups, no scaling): Qwen3-MoE,
// Mixtral. The balancing bias (train.bias_update_speed) still steers the selection.
struct SoftmaxTopkRouterSettings : config::LayerSettingsOf<SoftmaxTopkRouterSettings> {
  void describe(config::FieldVisitor&) override {}
};

inline const DeepSeekRouterSettings& deepseek_router_settings(const config::ModelConfig& m) {
  return m.router.settings<DeepSeekRouterSettings>();
}
inline DeepSeekRouterSettings& deepseek_router_settings(config::ModelConfig& m) {
  return m.router.settings<DeepSeekRouterSettings>();
}

}  // namespace latentmoe::model
