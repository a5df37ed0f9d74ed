// The module half of the layer registry: each attention, router or MoE-layer type registers a
// factory under the name its config settings registered (config/layer_choice.h); decoder blocks
// and MoE layers build their layers through make_attention / make_router / make_ffn, so a new
// type is a new source file with one register_* call and touches no block, trainer, parallel,
// checkpoint or CLI code.
#pragma once

#include <functional>
#include <memory>
#include <string>

#include "latentmoe/config/config.h"
#include "latentmoe/model/attention.h"
#include "latentmoe/model/moe.h"
#include "latentmoe/model/router.h"

namespace latentmoe::model {

// layer_index: the block's index (MTP blocks continue the numbering), for layer-dependent types.
using AttentionFactory = std::function<std::shared_ptr<AttentionLayer>(const config::ModelConfig&, int64_t layer_index)>;
using RouterFactory = std::function<std::shared_ptr<RouterLayer>(const config::ModelConfig&)>;
// What an FFN type builds: block layer_index's MoE layer, holding only these routed experts.
struct MoEBuild {
  int64_t layer_index = 0;
  ExpertShard experts;
};
using FfnFactory = std::function<std::shared_ptr<MoELayer>(const config::ModelConfig&, const MoEBuild&)>;

// For static initializers: `const bool registered = register_attention("name", factory);`.
// Throws std::logic_error for a name registered twice.
bool register_attention(const std::string& type, AttentionFactory factory);
bool register_router(const std::string& type, RouterFactory factory);
bool register_ffn(const std::string& type, FfnFactory factory);

// The layer model.attention.type / model.router.type / model.ffn.type names; ConfigError naming
// the key and the registered types when none is registered under it.
std::shared_ptr<AttentionLayer> make_attention(const config::ModelConfig& cfg, int64_t layer_index);
std::shared_ptr<RouterLayer> make_router(const config::ModelConfig& cfg);
// The FFN of MoE block build.layer_index (is_moe_layer).
std::shared_ptr<MoELayer> make_ffn(const config::ModelConfig& cfg, const MoEBuild& build);

}  // namespace latentmoe::model
