#include "latentmoe/model/layer_registry.h"

#include <fmt/format.h>

#include <map>
#include <stdexcept>

#include "latentmoe/util/error.h"

namespace latentmoe::model {

namespace {
template <class Factory>
std::map<std::string, Factory>& factories() {
  static std::map<std::string, Factory> registered;
  return registered;
}

template <class Factory>
bool add(const char* family, const std::string& type, Factory factory) {
  if (!factories<Factory>().emplace(type, std::move(factory)).second) {
    throw std::logic_error(fmt::format("{} type '{}' registered twice", family, type));
  }
  return true;
}

template <class Factory>
const Factory& find(const char* family, const std::string& type) {
  const auto& all = factories<Factory>();
  const auto it = all.find(type);
  if (it == all.end()) {
    std::string known;
    for (const auto& [name, factory] : all) known += (known.empty() ? "" : ", ") + name;
    throw ConfigError(fmt::format("model.{}.type '{}' has no module registered (registered: {})", family, type, known));
  }
  return it->second;
}
}  // namespace

bool register_attention(const std::string& type, AttentionFactory factory) {
  return add("attention", type, std::move(factory));
}

bool register_router(const std::string& type, RouterFactory factory) { return add("router", type, std::move(factory)); }

bool register_ffn(const std::string& type, FfnFactory factory) { return add("ffn", type, std::move(factory)); }

std::shared_ptr<AttentionLayer> make_attention(const config::ModelConfig& cfg, int64_t layer_index) {
  return find<AttentionFactory>("attention", cfg.attention.type())(cfg, layer_index);
}

std::shared_ptr<RouterLayer> make_router(const config::ModelConfig& cfg) {
  return find<RouterFactory>("router", cfg.router.type())(cfg);
}

std::shared_ptr<MoELayer> make_ffn(const config::ModelConfig& cfg, const MoEBuild& build) {
  return find<FfnFactory>("ffn", cfg.ffn.type())(cfg, build);
}

}  // namespace latentmoe::model
