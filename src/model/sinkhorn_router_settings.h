// `model.router.type: sinkhorn`: the research example of docs/extending.md (no HF model has it).
// Torch-free: the config loader, the counters and the module all read these keys.
#pragma once

#include <cstdint>

#include "latentmoe/config/config.h"
#include "latentmoe/config/layer_choice.h"

namespace latentmoe::model {

struct SinkhornRouterSettings : config::LayerSettingsOf<SinkhornRouterSettings> {
  int64_t iterations = 20;   // most Sinkhorn-Knopp sweeps per batch
  double tolerance = 1e-3;   // stop when the expert scaling changes by less (mean relative change)
  void describe(config::FieldVisitor& v) override;
};

inline const SinkhornRouterSettings& sinkhorn_router_settings(const config::ModelConfig& m) {
  return m.router.settings<SinkhornRouterSettings>();
}

}  // namespace latentmoe::model
