// Loading a Config from YAML/JSON files and `--set key.path=value` overrides, dumping it back as
// YAML, and generating the configuration reference. Every error is a latentmoe::ConfigError that
// names file:line (or the override), the key path, the value and what is allowed.
#pragma once

#include <string>
#include <utility>
#include <vector>

#include "latentmoe/config/config.h"
#include "latentmoe/util/error.h"

namespace latentmoe::config {

// A preset name (`debug`, `deepseek-v3`, ...) or a path to a .yaml/.yml/.json file.
std::string resolve_config_path(const std::string& name_or_path);
std::vector<std::string> preset_names();

// Starts from the defaults and applies the file; unknown keys, wrong types and duplicate keys
// are all reported together.
Config load_config_file(const std::string& path);

// The same for YAML text in memory (e.g. a checkpoint's config.yaml); `source` names it in errors.
Config load_config_text(const std::string& text, const std::string& source);

// Applies one "a.b.c=value" override; the value is parsed as a YAML scalar or flow sequence.
void apply_override(Config& cfg, const std::string& assignment);

// resolve_config_path + load_config_file + every override, in order. Does not validate.
Config load_config(const std::string& name_or_path, const std::vector<std::string>& overrides);

// Every field, with its doc as a comment; load_config_file() of this text yields an equal Config.
std::string dump_config_yaml(const Config& cfg);

// Every leaf key ("model.hidden_size") with its value as dump_config_yaml writes it, in schema order.
std::vector<std::pair<std::string, std::string>> config_key_values(const Config& cfg);

// The leaf keys whose values differ between two configs, with both values, in schema order.
struct KeyDifference {
  std::string key, from, to;
};
std::vector<KeyDifference> differing_keys(const Config& from, const Config& to);

// Markdown reference of every key: type, default, doc (docs/configuration.md).
std::string config_reference_markdown();

// "did you mean" helper: the candidate closest to `word` within a small edit distance, or "".
std::string closest_match(const std::string& word, const std::vector<std::string>& candidates);

}  // namespace latentmoe::config
