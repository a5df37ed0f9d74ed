// YAML/JSON → Config through the declared schema. JSON goes through the same YAML parser (JSON is
// a YAML flow document), so both formats share one schema, one set of errors and file:line marks.
#include "latentmoe/config/loader.h"
#include "latentmoe/util/utf8.h"

#include <yaml-cpp/yaml.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <map>
#include <sstream>

#include <fmt/format.h>

namespace latentmoe::config {

namespace fs = std::filesystem;

namespace {

// Where a value came from: "configs/x.yaml:12" or "--set model.a=b".
std::string origin_of(const std::string& source, const YAML::Node& node) {
  if (source.rfind("--set", 0) == 0) return source;
  const YAML::Mark mark = node.Mark();
  if (mark.line < 0) return source;
  return fmt::format("{}:{}", source, mark.line + 1);
}

// Quoted scalars carry the non-specific tag "!": they are strings even if they look numeric.
bool is_quoted(const YAML::Node& node) { return node.Tag() == "!"; }

// Config strings end up in paths, log lines and the dumped config.yaml: printable UTF-8 only.
std::string unprintable(const std::string& s) {
  if (const size_t bad = first_invalid_utf8(s); bad != std::string::npos) {
    return fmt::format("is not valid UTF-8 (byte 0x{:02x} at offset {})", static_cast<unsigned char>(s[bad]), bad);
  }
  for (size_t i = 0; i < s.size(); ++i) {
    const auto c = static_cast<unsigned char>(s[i]);
    if (c < 0x20 || c == 0x7f) return fmt::format("contains the control character 0x{:02x} at offset {}", c, i);
  }
  return "";
}

// Keys that moved into a layer-type section (config/layer_choice.h): old path -> the section
// (under the same parent) that now holds the key. Configs and checkpoints written before keep
// loading; the dump writes the new place.
const char* moved_to(const std::string& path) {
  static const std::map<std::string, const char*> moved = {
      {"model.q_lora_rank", "attention"},     {"model.kv_lora_rank", "attention"},
      {"model.qk_nope_head_dim", "attention"}, {"model.qk_rope_head_dim", "attention"},
      {"model.v_head_dim", "attention"},       {"model.n_group", "router"},
      {"model.topk_group", "router"},         {"model.routed_scaling_factor", "router"},
      {"model.scoring_func", "router"},       {"model.moe_intermediate_size", "ffn"},
      {"model.n_shared_experts", "ffn"},
  };
  const auto it = moved.find(path);
  return it == moved.end() ? nullptr : it->second;
}

bool is_null(const YAML::Node& node) {
  return node.IsNull() || (node.IsScalar() && !is_quoted(node) && (node.Scalar() == "null" || node.Scalar() == "~"));
}

class Loader {
 public:
  explicit Loader(std::string source) : source_(std::move(source)) {}

  void apply_map(const std::function<void(FieldVisitor&)>& describe, const YAML::Node& map,
                 const std::string& prefix) {
    if (!map.IsMap()) {
      error(map, fmt::format("'{}' must be a mapping of keys, got {}",
                             prefix.empty() ? "<top level>" : prefix.substr(0, prefix.size() - 1), describe_value(map)));
      return;
    }
    // A layer-type section's `type` decides which of its other keys exist: apply it first.
    bool type_applied = false;
    const SchemaLevel before_type = collect_level(describe);
    if (const FieldInfo* type_field = before_type.find_field("type"); type_field && map["type"]) {
      const size_t errors_before = errors_.size();
      assign(*type_field, map["type"], prefix + "type");
      if (errors_.size() > errors_before) return;  // the other keys depend on a type we do not have
      type_applied = true;
    }
    std::vector<std::pair<YAML::Node, YAML::Node>> moved_keys;  // applied after the sections they move into
    const SchemaLevel level = collect_level(describe);
    std::map<std::string, int> first_line;
    for (auto it = map.begin(); it != map.end(); ++it) {
      if (!it->first.IsScalar()) {
        error(it->first, fmt::format("a key in '{}' is {}; keys must be plain names",
                                     prefix.empty() ? "<top level>" : prefix.substr(0, prefix.size() - 1),
                                     describe_value(it->first)));
        continue;
      }
      const std::string key = it->first.Scalar();
      const std::string path = prefix + key;
      const int line = it->first.Mark().line + 1;
      if (auto [pos, inserted] = first_line.emplace(key, line); !inserted) {
        error(it->first, fmt::format("duplicate key '{}'", path), fmt::format(" (first defined at line {})", pos->second));
        continue;
      }
      if (const FieldInfo* f = level.find_field(key)) {
        if (!(type_applied && key == "type")) assign(*f, it->second, path);
      } else if (const char* moved = moved_to(path); moved && level.find_section(moved)) {
        moved_keys.emplace_back(it->first, it->second);
      } else if (const SchemaLevel::Section* s = level.find_section(key)) {
        apply_map(s->describe, it->second, path + ".");
      } else {
        unknown_key(it->first, key, path, level);
      }
    }
    // Keys from before the layer registry (checkpoints keep their config.yaml): the same value in
    // the section that holds it now, once that section's type is known.
    for (const auto& [key_node, value] : moved_keys) {
      const std::string key = key_node.Scalar(), section = moved_to(prefix + key);
      const SchemaLevel::Section* s = level.find_section(section);
      const SchemaLevel inner = collect_level(s->describe);
      if (const YAML::Node written = map[section]; written.IsDefined() && written.IsMap() && written[key]) {
        error(key_node, fmt::format("'{}{}' is given twice: here and as '{}{}.{}'", prefix, key, prefix, section, key));
        continue;
      }
      if (const FieldInfo* f = inner.find_field(key)) {
        assign(*f, value, prefix + section + "." + key);
        continue;
      }
      moved_key_error(key_node, prefix, key, section, inner);
    }
  }

  void moved_key_error(const YAML::Node& at, const std::string& prefix, const std::string& key,
                       const std::string& section, const SchemaLevel& inner) {
    std::string type;
    if (const FieldInfo* t = inner.find_field("type")) type = *std::get<std::string*>(t->ref);
    error(at, fmt::format("'{}{}' (now '{}{}.{}') is not a key of {}{}.type '{}'", prefix, key, prefix, section, key,
                          prefix, section, type));
  }

  // Applies `value` at a dotted path (for --set).
  void apply_path(const std::function<void(FieldVisitor&)>& describe, const std::vector<std::string>& parts,
                  size_t index, const YAML::Node& value, const std::string& prefix) {
    const SchemaLevel level = collect_level(describe);
    const std::string& key = parts[index];
    const std::string path = prefix + key;
    const bool last = index + 1 == parts.size();
    if (const FieldInfo* f = level.find_field(key); f && last) {
      assign(*f, value, path);
    } else if (const SchemaLevel::Section* s = level.find_section(key)) {
      if (last) {
        apply_map(s->describe, value, path + ".");
      } else {
        apply_path(s->describe, parts, index + 1, value, path + ".");
      }
    } else if (const char* moved = moved_to(path); moved && last && level.find_section(moved)) {
      const SchemaLevel inner = collect_level(level.find_section(moved)->describe);
      if (const FieldInfo* moved_field = inner.find_field(key)) {
        assign(*moved_field, value, prefix + moved + "." + key);
      } else {
        moved_key_error(value, prefix, key, moved, inner);
      }
    } else if (f) {
      error(value, fmt::format("'{}' is a value ({}), not a section: '{}' does not exist", path,
                               field_type_name(*f), path + "." + parts[index + 1]));
    } else {
      unknown_key(value, key, path, level);
    }
  }

  void throw_if_errors() const {
    if (errors_.empty()) return;
    std::string msg = errors_.size() == 1 ? "invalid configuration:" : fmt::format("invalid configuration ({} errors):", errors_.size());
    for (const auto& e : errors_) msg += "\n  " + e;
    throw ConfigError(msg);
  }

 private:
  // "<what> at <file:line>[<suffix>]", the shape of every loader message.
  void error(const YAML::Node& at, const std::string& what, const std::string& suffix = "") {
    errors_.push_back(what + " at " + origin_of(source_, at) + suffix);
  }

  void unknown_key(const YAML::Node& at, const std::string& key, const std::string& path, const SchemaLevel& level) {
    std::string hint;
    const std::string section = path.substr(0, path.size() - key.size());
    if (const std::string other = other_layer_types_with(level, section, key); !other.empty()) {
      error(at, fmt::format("unknown key '{}'", path), other);
      return;
    }
    if (std::string near = closest_match(key, level.names()); !near.empty()) {
      hint = fmt::format(" (did you mean '{}'?)", near);
    }
    if (hint.empty()) {
      hint = fmt::format("; allowed keys in '{}': see docs/configuration.md",
                         section.empty() ? "<top level>" : section.substr(0, section.size() - 1));
    }
    error(at, fmt::format("unknown key '{}'", path), hint);
  }

  // In a layer-type section (a `type` field; the section's name is its family), "; it is a key of
  // model.attention.type 'gqa' (this section's type is 'mla')" when other types have the key.
  static std::string other_layer_types_with(const SchemaLevel& level, const std::string& section,
                                            const std::string& key) {
    const FieldInfo* type = level.find_field("type");
    if (!type || section.size() < 2 || !std::holds_alternative<std::string*>(type->ref)) return "";
    const std::string path = section.substr(0, section.size() - 1);  // "model.attention"
    const std::string family = path.substr(path.rfind('.') + 1);
    const std::vector<std::string> types = layer_types_with_key(family, key);
    if (types.empty()) return "";
    std::string names;
    for (const auto& t : types) names += (names.empty() ? "'" : ", '") + t + "'";
    return fmt::format("; it is a key of {}.type {} (this section's type is '{}': set {}.type first)", path, names,
                       *std::get<std::string*>(type->ref), path);
  }

  void type_error(const YAML::Node& node, const std::string& path, const FieldInfo& f) {
    error(node, fmt::format("'{}' expects {}, got {}", path, field_type_name(f), describe_value(node)));
  }

  // "string 'abc'", "float 3.5", "null", "a list": what the user actually wrote.
  static std::string describe_value(const YAML::Node& node) {
    if (is_null(node)) return "null";
    if (node.IsSequence()) return "a list";
    if (node.IsMap()) return "a mapping";
    const std::string& text = node.Scalar();
    if (is_quoted(node)) return fmt::format("string '{}'", text);
    int64_t i = 0;
    double d = 0;
    bool b = false;
    if (YAML::convert<int64_t>::decode(node, i)) return fmt::format("int {}", text);
    if (YAML::convert<double>::decode(node, d)) return fmt::format("float {}", text);
    if (YAML::convert<bool>::decode(node, b)) return fmt::format("bool {}", text);
    return fmt::format("string '{}'", text);
  }

  template <class T>
  bool convert_scalar(const YAML::Node& node, T& out) {
    if (!node.IsScalar() || is_quoted(node)) return false;
    try {
      out = node.as<T>();
      return true;
    } catch (const YAML::Exception&) {
      return false;
    }
  }

  template <class T>
  bool convert_list(const YAML::Node& node, std::vector<T>& out) {
    if (!node.IsSequence()) return false;
    std::vector<T> values;
    for (const auto& item : node) {
      T v{};
      if constexpr (std::is_same_v<T, std::string>) {
        if (!item.IsScalar()) return false;
        v = item.Scalar();
      } else if (!convert_scalar(item, v)) {
        return false;
      }
      values.push_back(std::move(v));
    }
    out = std::move(values);
    return true;
  }

  void assign(const FieldInfo& f, const YAML::Node& node, const std::string& path) {
    bool ok = std::visit(
        [&](auto* target) -> bool {
          using T = std::remove_pointer_t<decltype(target)>;
          if constexpr (std::is_same_v<T, std::string>) {
            if (!node.IsScalar() || is_null(node)) return false;
            const std::string value = node.Scalar();
            if (!f.choices.empty() && std::find(f.choices.begin(), f.choices.end(), value) == f.choices.end()) {
              std::string hint;
              std::vector<std::string> options(f.choices.begin(), f.choices.end());
              if (std::string near = closest_match(value, options); !near.empty()) hint = fmt::format(" (did you mean '{}'?)", near);
              error(node, fmt::format("'{}' must be {}, got '{}'", path, field_type_name(f), value), hint);
              return true;  // reported
            }
            if (const std::string problem = unprintable(value); !problem.empty()) {
              error(node, fmt::format("'{}' {}; config strings must be printable UTF-8", path, problem));
              return true;  // reported
            }
            *target = value;
            return true;
          } else if constexpr (std::is_same_v<T, std::optional<int64_t>>) {
            if (is_null(node)) {
              target->reset();
              return true;
            }
            int64_t v = 0;
            if (!convert_scalar(node, v)) return false;
            *target = v;
            return true;
          } else if constexpr (std::is_same_v<T, std::vector<int64_t>> || std::is_same_v<T, std::vector<double>> ||
                               std::is_same_v<T, std::vector<std::string>>) {
            if (!convert_list(node, *target)) return false;
            if constexpr (std::is_same_v<T, std::vector<std::string>>) {
              for (size_t i = 0; i < target->size(); ++i) {
                if (const std::string problem = unprintable((*target)[i]); !problem.empty()) {
                  error(node, fmt::format("'{}' item {} {}; config strings must be printable UTF-8", path, i, problem));
                }
              }
            }
            return true;
          } else {
            return convert_scalar(node, *target);
          }
        },
        f.ref);
    if (!ok) type_error(node, path, f);
  }

  std::string source_;
  std::vector<std::string> errors_;
};

std::vector<std::string> split(const std::string& text, char sep) {
  std::vector<std::string> out;
  std::stringstream stream(text);
  std::string part;
  while (std::getline(stream, part, sep)) out.push_back(part);
  return out;
}

}  // namespace

std::string closest_match(const std::string& word, const std::vector<std::string>& candidates) {
  auto distance = [](const std::string& a, const std::string& b) {
    std::vector<size_t> row(b.size() + 1);
    for (size_t j = 0; j <= b.size(); ++j) row[j] = j;
    for (size_t i = 1; i <= a.size(); ++i) {
      size_t diagonal = row[0];
      row[0] = i;
      for (size_t j = 1; j <= b.size(); ++j) {
        const size_t above = row[j];
        row[j] = std::min({row[j] + 1, row[j - 1] + 1, diagonal + (a[i - 1] == b[j - 1] ? 0 : 1)});
        diagonal = above;
      }
    }
    return row[b.size()];
  };
  std::string best;
  size_t best_distance = std::max<size_t>(2, word.size() / 3) + 1;
  for (const auto& c : candidates) {
    const size_t d = distance(word, c);
    if (d < best_distance) {
      best_distance = d;
      best = c;
    }
  }
  return best;
}

std::vector<std::string> preset_names() {
  std::vector<std::string> names;
  std::error_code ec;
  for (const auto& entry : fs::directory_iterator(LATENTMOE_CONFIG_DIR, ec)) {
    if (entry.path().extension() == ".yaml") names.push_back(entry.path().stem().string());
  }
  std::sort(names.begin(), names.end());
  return names;
}

std::string resolve_config_path(const std::string& name_or_path) {
  if (fs::is_regular_file(name_or_path)) return name_or_path;
  const fs::path preset = fs::path(LATENTMOE_CONFIG_DIR) / (name_or_path + ".yaml");
  if (name_or_path.find('/') == std::string::npos && fs::is_regular_file(preset)) return preset.string();
  std::string names;
  for (const auto& n : preset_names()) names += (names.empty() ? "" : ", ") + n;
  throw ConfigError(fmt::format("--config '{}': no such file, and not a preset name (presets: {})", name_or_path, names));
}

namespace {
// A run is sized by train.steps or train.tokens: a layer (file or --set) that gives one of them
// but not the other clears the other, so `tokens: 14.8e12` over a preset sized in steps is not
// "both set". Giving both (non-zero) in one layer is left for validation to reject.
void keep_one_run_length(Config& cfg, bool set_steps, bool set_tokens) {
  if (set_tokens && !set_steps) cfg.train.steps = 0;
  if (set_steps && !set_tokens) cfg.train.tokens = 0;
}

// Parses YAML (or JSON) text already in memory; `source` names it in every message.
Config config_from_yaml(const std::function<YAML::Node()>& parse, const std::string& source, const char* format) {
  YAML::Node root;
  try {
    root = parse();
  } catch (const YAML::BadFile&) {
    throw ConfigError(fmt::format("{}: cannot open config file", source));
  } catch (const YAML::ParserException& e) {
    throw ConfigError(fmt::format("{}:{}:{}: {} syntax error: {}", source, e.mark.line + 1, e.mark.column + 1, format, e.msg));
  }
  Config cfg;
  if (root.IsNull()) {  // silently the debug preset's defaults is never what an empty file meant
    throw ConfigError(fmt::format("{}: the config is empty; give at least one key (e.g. `name: my-run`), or --config "
                                  "debug for the defaults",
                                  source));
  }
  Loader loader(source);
  try {
    loader.apply_map(describe_root(cfg), root, "");
  } catch (const YAML::Exception& e) {  // a conversion the loader did not foresee: still name the place
    throw ConfigError(fmt::format("{}:{}:{}: {}", source, e.mark.line + 1, e.mark.column + 1, e.msg));
  }
  loader.throw_if_errors();
  if (const YAML::Node train = root.IsMap() ? static_cast<const YAML::Node&>(root)["train"] : YAML::Node(); train && train.IsMap()) {
    keep_one_run_length(cfg, static_cast<bool>(train["steps"]), static_cast<bool>(train["tokens"]));
  }
  return cfg;
}
}  // namespace

Config load_config_file(const std::string& path) {
  const std::string ext = fs::path(path).extension().string();
  if (ext != ".yaml" && ext != ".yml" && ext != ".json") {
    throw ConfigError(fmt::format("{}: unsupported config file extension '{}' (allowed: .yaml, .yml, .json)", path, ext));
  }
  return config_from_yaml([&] { return YAML::LoadFile(path); }, path, ext == ".json" ? "JSON" : "YAML");
}

Config load_config_text(const std::string& text, const std::string& source) {
  return config_from_yaml([&] { return YAML::Load(text); }, source, "YAML");
}

void apply_override(Config& cfg, const std::string& assignment) {
  const std::string origin = "--set " + assignment;
  const size_t eq = assignment.find('=');
  if (eq == std::string::npos || eq == 0) {
    throw ConfigError(fmt::format("{}: expected KEY=VALUE with a dotted key, e.g. model.hidden_size=256", origin));
  }
  const std::string key = assignment.substr(0, eq);
  YAML::Node value;
  try {
    value = YAML::Load(assignment.substr(eq + 1));
  } catch (const YAML::ParserException& e) {
    throw ConfigError(fmt::format("{}: cannot parse the value: {}", origin, e.msg));
  }
  const std::vector<std::string> parts = split(key, '.');
  if (std::any_of(parts.begin(), parts.end(), [](const std::string& p) { return p.empty(); })) {
    throw ConfigError(fmt::format("{}: empty component in key '{}'", origin, key));
  }
  Config updated = cfg;  // all or nothing: a failed override leaves cfg untouched
  Loader loader(origin);
  loader.apply_path(describe_root(updated), parts, 0, value, "");
  loader.throw_if_errors();
  keep_one_run_length(updated, key == "train.steps", key == "train.tokens");
  cfg = std::move(updated);
}

Config load_config(const std::string& name_or_path, const std::vector<std::string>& overrides) {
  Config cfg = load_config_file(resolve_config_path(name_or_path));
  for (const auto& o : overrides) apply_override(cfg, o);
  return cfg;
}

}  // namespace latentmoe::config
