// The layer-type registry behind LayerChoice. The registry is a function-local static so that
// registrations from static initializers in other translation units find it constructed.
#include "latentmoe/config/layer_choice.h"

#include <fmt/format.h>

#include <algorithm>
#include <map>
#include <mutex>
#include <stdexcept>

#include "latentmoe/util/error.h"

namespace latentmoe::config {

namespace {
using Family = std::map<std::string, LayerTypeInfo, std::less<>>;

std::map<std::string, Family, std::less<>>& registry() {
  static std::map<std::string, Family, std::less<>> families;
  return families;
}
}  // namespace

void register_layer_type(LayerTypeInfo info) {
  Family& family = registry()[info.family];
  if (family.count(info.name)) {
    throw std::logic_error(fmt::format("layer type '{}' registered twice in family '{}'", info.name, info.family));
  }
  const std::string name = info.name;
  family.emplace(name, std::move(info));
}

const LayerTypeInfo* find_layer_type(std::string_view family, std::string_view name) {
  const auto f = registry().find(family);
  if (f == registry().end()) return nullptr;
  const auto t = f->second.find(name);
  return t == f->second.end() ? nullptr : &t->second;
}

std::vector<std::string> layer_type_names(std::string_view family) {
  std::vector<std::string> names;
  if (const auto f = registry().find(family); f != registry().end()) {
    for (const auto& [name, info] : f->second) names.push_back(name);
  }
  return names;
}

std::vector<std::string> layer_types_with_key(std::string_view family, std::string_view key) {
  std::vector<std::string> out;
  for (const auto& name : layer_type_names(family)) {
    const std::unique_ptr<LayerSettings> settings = find_layer_type(family, name)->make_settings();
    if (collect_level([&settings](FieldVisitor& v) { settings->describe(v); }).find_field(key)) out.push_back(name);
  }
  return out;
}

LayerChoice::LayerChoice(std::string family, std::string type) : family_(std::move(family)), type_(std::move(type)) {}

LayerChoice::LayerChoice(const LayerChoice& other)
    : family_(other.family_),
      type_(other.type_),
      settings_(other.settings_ ? other.settings_->clone() : nullptr),
      settings_type_(other.settings_type_) {}

LayerChoice& LayerChoice::operator=(const LayerChoice& other) {
  if (this != &other) *this = LayerChoice(other);
  return *this;
}

void LayerChoice::set_type(const std::string& type) { type_ = type; }

LayerSettings& LayerChoice::settings_base() {
  // Made on first use, also through a const Config that threads share: one maker at a time.
  static std::mutex making;
  const std::lock_guard<std::mutex> lock(making);
  if (!settings_ || settings_type_ != type_) {
    const LayerTypeInfo* info = find_layer_type(family_, type_);
    if (!info) {
      std::string known;
      for (const auto& n : layer_type_names(family_)) known += (known.empty() ? "" : ", ") + n;
      throw ConfigError(fmt::format("model.{}.type '{}' is not a registered {} type (registered: {})", family_, type_,
                                    family_, known.empty() ? "none" : known));
    }
    settings_ = info->make_settings();
    settings_type_ = type_;
  }
  return *settings_;
}

void LayerChoice::throw_wrong_settings_class() const {
  throw std::logic_error(fmt::format("model.{}: the settings of type '{}' are not of the class asked for", family_, type_));
}

void LayerChoice::describe(FieldVisitor& v) {
  // Choices are views into the registry's keys, which live as long as the process.
  std::vector<std::string_view> choices;
  if (const auto f = registry().find(family_); f != registry().end()) {
    for (const auto& entry : f->second) choices.push_back(entry.first);
  }
  v.field({"type", &type_, "Registered layer type; the other keys of this section depend on it", choices});
  if (v.documents_all_variants()) {
    for (const auto& name : layer_type_names(family_)) {
      const LayerTypeInfo* info = find_layer_type(family_, name);
      std::unique_ptr<LayerSettings> defaults = info->make_settings();
      v.variant(name, info->doc, [&defaults](FieldVisitor& s) { defaults->describe(s); });
    }
    return;
  }
  // An unregistered type was rejected by the loader already (choices); describe nothing for it.
  if (!find_layer_type(family_, type_)) return;
  settings_base().describe(v);
}

}  // namespace latentmoe::config
