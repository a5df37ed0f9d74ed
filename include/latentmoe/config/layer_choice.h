// Interchangeable model layers chosen by config: `model.attention.type`, `model.router.type`,
// `model.ffn.type` (the FFN of the MoE layers).
// Each layer type registers its settings (the keys of its section, declared like any other
// section's fields) under its family; a config section holds the chosen type and that type's
// settings, so unknown keys, did-you-mean, the dump and docs/configuration.md work per type.
// Torch-free: the modules that implement a type register separately (model/layer_registry.h).
#pragma once

#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "latentmoe/config/schema.h"

namespace latentmoe::config {

struct ModelConfig;

// A layer type's own keys. Derive through LayerSettingsOf<T> (it supplies clone()).
class LayerSettings {
 public:
  virtual ~LayerSettings() = default;
  virtual void describe(FieldVisitor& v) = 0;
  virtual std::unique_ptr<LayerSettings> clone() const = 0;
};

template <class Derived>
class LayerSettingsOf : public LayerSettings {
 public:
  std::unique_ptr<LayerSettings> clone() const override {
    return std::make_unique<Derived>(static_cast<const Derived&>(*this));
  }
};

// A layer's size from the config alone (model/param_count.h sums them; no tensors).
struct LayerCounts {
  int64_t parameters = 0;       // one layer's parameters (buffers not counted)
  std::optional<int64_t> activated_parameters;  // those a token runs through (unset: all of them)
  int64_t routed_parameters = 0;  // of parameters, the routed experts' (split over EP ranks)
  int64_t norm_parameters = 0;  // of which norm weights: not matmul weights, so no FLOPs
  int64_t score_width = 0;      // attention: sum over query heads of (qk dim + value dim); the
                                // score and value products cost 2 x this x context FLOPs per token
};

// What a layer type declares besides its keys: its counter, and cross-field rules on the whole
// model section (messages name the keys, e.g. "model.attention.head_dim must be even").
struct LayerTypeInfo {
  std::string family;  // "attention", "router", "ffn"
  std::string name;    // the value of model.<family>.type
  std::string doc;     // one line for docs/configuration.md
  std::function<std::unique_ptr<LayerSettings>()> make_settings;
  std::function<LayerCounts(const ModelConfig&)> count;
  std::function<void(const ModelConfig&, std::vector<std::string>& violations)> validate;
};

// Called from a static initializer in the type's own source file (see docs/extending.md).
// Registering a name twice in one family throws at load time.
void register_layer_type(LayerTypeInfo info);
// nullptr when the family has no such type.
const LayerTypeInfo* find_layer_type(std::string_view family, std::string_view name);
// Registered names of a family, sorted.
std::vector<std::string> layer_type_names(std::string_view family);
// The family's types that declare `key` (for "it is a key of type 'gqa'" hints).
std::vector<std::string> layer_types_with_key(std::string_view family, std::string_view key);

// One config section that selects a layer type: the `type` key plus that type's settings.
class LayerChoice {
 public:
  LayerChoice(std::string family, std::string type);
  LayerChoice(const LayerChoice& other);
  LayerChoice& operator=(const LayerChoice& other);
  LayerChoice(LayerChoice&&) noexcept = default;
  LayerChoice& operator=(LayerChoice&&) noexcept = default;

  const std::string& family() const { return family_; }
  const std::string& type() const { return type_; }
  // Switches the type; the settings start from the new type's defaults.
  void set_type(const std::string& type);

  // Declares `type` (choices: the registered names) and the current type's keys. Visitors that
  // document the schema (FieldVisitor::documents_all_variants) get every type's keys instead.
  void describe(FieldVisitor& v);

  // The current type's settings; throws ConfigError when `type` is not registered, and
  // std::logic_error when T is not the current type's settings class. Safe to call from several
  // threads; a reference taken before set_type() refers to the old type's settings, which
  // set_type() frees on the next access.
  template <class T>
  T& settings() {
    return cast<T>();
  }
  template <class T>
  const T& settings() const {
    return cast<T>();
  }
  LayerSettings& settings_base();

 private:
  template <class T>
  T& cast() {
    if (auto* typed = dynamic_cast<T*>(&settings_base())) return *typed;
    throw_wrong_settings_class();
  }
  template <class T>
  const T& cast() const {
    return const_cast<LayerChoice*>(this)->cast<T>();
  }
  [[noreturn]] void throw_wrong_settings_class() const;

  std::string family_;
  std::string type_;
  // Settings of settings_type_ (lags type_ after the loader assigns a new type until next use).
  // mutable: made on first use, also through a const Config.
  mutable std::unique_ptr<LayerSettings> settings_;
  mutable std::string settings_type_;
};

}  // namespace latentmoe::config
