// `model.router.type: sinkhorn`, its torch-free half: keys, counter, rules (docs/extending.md).
#include <fmt/format.h>

#include "latentmoe/model/checked_count.h"
#include "sinkhorn_router_settings.h"

namespace latentmoe::model {

void SinkhornRouterSettings::describe(config::FieldVisitor& v) {
  v.field({"iterations", &iterations,
           "Most Sinkhorn-Knopp sweeps per micro-batch when training (the balanced assignment's accuracy)"});
  v.field({"tolerance", &tolerance,
           "Sweeps stop early once a sweep changes the per-expert scaling by less than this (mean relative "
           "change; tested every 4 sweeps)"});
}

namespace {
const bool registered = [] {
  config::register_layer_type(
      {.family = "router",
       .name = "sinkhorn",
       .doc = "Research example (docs/extending.md): training picks the top-k of Sinkhorn-balanced affinities, so "
              "every expert gets an equal share of each micro-batch without an auxiliary loss or bias; evaluation "
              "and generation pick the plain top-k; gate weights are the softmax probabilities",
       .make_settings = [] { return std::make_unique<SinkhornRouterSettings>(); },
       .count = [](const config::ModelConfig& m) -> config::LayerCounts {
         return {.parameters = (Count(m.n_routed_experts) * m.hidden_size).value()};
       },
       .validate =
           [](const config::ModelConfig& m, std::vector<std::string>& out) {
             const SinkhornRouterSettings& s = sinkhorn_router_settings(m);
             if (s.iterations < 1) {
               out.push_back(fmt::format("model.router.iterations must be >= 1, got {}", s.iterations));
             }
             if (!(s.tolerance > 0)) {
               out.push_back(fmt::format("model.router.tolerance must be > 0, got {}", s.tolerance));
             }
           }});
  return true;
}();
}  // namespace

}  // namespace latentmoe::model
