// Config → YAML (re-loadable, every field, docs as comments) and → the Markdown key reference.
#include <fmt/format.h>

#include <map>
#include <yaml-cpp/yaml.h>

#include <vector>

#include "latentmoe/config/loader.h"

namespace latentmoe::config {

namespace {

// Shortest text that parses back to the same double and that YAML 1.1 parsers (PyYAML) also
// read as a float: those need a '.' in the mantissa, so "1e-06" becomes "1.0e-06".
std::string format_double(double v) {
  std::string s = fmt::format("{}", v);
  if (s.find_first_of("na") != std::string::npos) return s;  // nan, inf: left to the validator
  const size_t exponent = s.find_first_of("eE");
  if (s.find('.') == std::string::npos) s.insert(exponent == std::string::npos ? s.size() : exponent, ".0");
  return s;
}

std::string quote_if_needed(const std::string& s) {
  YAML::Emitter e;
  e << s;
  return e.c_str();
}

// Inside a flow sequence "," and "]" end a plain scalar, so list items are always quoted.
std::string double_quoted(const std::string& s) {
  YAML::Emitter e;
  e << YAML::DoubleQuoted << s;
  return e.c_str();
}

std::string value_text(const FieldInfo& f) {
  return std::visit(
      [](auto* v) -> std::string {
        using T = std::remove_pointer_t<decltype(v)>;
        if constexpr (std::is_same_v<T, int64_t>) {
          return std::to_string(*v);
        } else if constexpr (std::is_same_v<T, double>) {
          return format_double(*v);
        } else if constexpr (std::is_same_v<T, bool>) {
          return *v ? "true" : "false";
        } else if constexpr (std::is_same_v<T, std::string>) {
          return v->empty() ? "\"\"" : quote_if_needed(*v);
        } else if constexpr (std::is_same_v<T, std::optional<int64_t>>) {
          return v->has_value() ? std::to_string(**v) : "null";
        } else {
          std::string out = "[";
          for (size_t i = 0; i < v->size(); ++i) {
            if (i) out += ", ";
            if constexpr (std::is_same_v<T, std::vector<double>>) {
              out += format_double((*v)[i]);
            } else if constexpr (std::is_same_v<T, std::vector<int64_t>>) {
              out += std::to_string((*v)[i]);
            } else {
              out += double_quoted((*v)[i]);
            }
          }
          return out + "]";
        }
      },
      f.ref);
}

class YamlDumper final : public FieldVisitor {
 public:
  YamlDumper(std::string& out, int depth) : out_(out), depth_(depth) {}
  void field(const FieldInfo& f) override {
    out_ += fmt::format("{}{}: {}  # {}\n", indent(), f.name, value_text(f), f.doc);
  }
  void section(std::string_view name, std::string_view doc,
               const std::function<void(FieldVisitor&)>& describe_fields) override {
    out_ += fmt::format("{}{}:  # {}\n", indent(), name, doc);
    YamlDumper inner(out_, depth_ + 1);
    describe_fields(inner);
  }

 private:
  std::string indent() const { return std::string(2 * depth_, ' '); }
  std::string& out_;
  int depth_;
};

class MarkdownWriter final : public FieldVisitor {
 public:
  MarkdownWriter(std::string& out, std::string prefix) : out_(out), prefix_(std::move(prefix)) {}
  void field(const FieldInfo& f) override {
    if (!table_open_) {
      out_ += "| key | type | default | description |\n|---|---|---|---|\n";
      table_open_ = true;
    }
    out_ += fmt::format("| `{}{}` | {} | `{}` | {} |\n", prefix_, f.name, field_type_name(f), value_text(f), f.doc);
  }
  // Every registered type of a layer-type section, each with its own table of keys.
  bool documents_all_variants() const override { return true; }
  void variant(std::string_view type, std::string_view doc,
               const std::function<void(FieldVisitor&)>& describe_fields) override {
    out_ += fmt::format("\nWith `{}type: {}` — {}:\n\n", prefix_, type, doc);
    MarkdownWriter inner(out_, prefix_);
    describe_fields(inner);
    if (!inner.table_open_ && inner.deferred_.empty()) out_ += "(no further keys)\n";
    for (const Deferred& d : inner.deferred_) inner.write_section(d.name, d.doc, d.describe);
    table_open_ = false;
  }
  // Top-level sections are written where they are declared; a section nested in one (e.g.
  // train.batch_ramp) after all of its parent's fields, so no parent key lands under its heading.
  void section(std::string_view name, std::string_view doc,
               const std::function<void(FieldVisitor&)>& describe_fields) override {
    if (prefix_.empty()) {
      write_section(std::string(name), std::string(doc), describe_fields);
    } else {
      deferred_.push_back({std::string(name), std::string(doc), describe_fields});
    }
  }

 private:
  struct Deferred {
    std::string name, doc;
    std::function<void(FieldVisitor&)> describe;
  };
  void write_section(const std::string& name, const std::string& doc, const std::function<void(FieldVisitor&)>& describe) {
    const std::string path = prefix_ + name;
    out_ += fmt::format("\n## `{}`\n\n{}.\n\n", path, doc);
    MarkdownWriter inner(out_, path + ".");
    describe(inner);
    for (const Deferred& d : inner.deferred_) inner.write_section(d.name, d.doc, d.describe);
    table_open_ = false;  // later fields of this level start a new table
  }
  std::string& out_;
  std::string prefix_;
  bool table_open_ = false;
  std::vector<Deferred> deferred_;
};

}  // namespace

std::string dump_config_yaml(const Config& cfg) {
  Config copy = cfg;
  std::string out = "# latentmoe effective configuration (latentmoe config --dump)\n";
  YamlDumper dumper(out, 0);
  copy.describe(dumper);
  return out;
}

std::string config_reference_markdown() {
  Config defaults;
  std::string out =
      "# Configuration reference\n\n"
      "<!-- Generated by `build/latentmoe config --docs` from src/config/sections.cpp; "
      "a test fails when this file drifts. Regenerate with `make docs`. -->\n\n"
      "Configs are YAML or JSON files with these keys (unknown keys are errors). Defaults are the\n"
      "`debug` preset. Override any key on the command line with `--set section.key=value`.\n"
      "Cross-field rules are checked by `src/config/validate.cpp`.\n\n"
      "## top level\n\n";
  MarkdownWriter writer(out, "");
  defaults.describe(writer);
  return out;
}

std::vector<KeyDifference> differing_keys(const Config& from, const Config& to) {
  // Layer-type sections of different types have different keys: a key only one side has shows
  // "(absent)" on the other.
  const auto a = config_key_values(from), b = config_key_values(to);
  std::map<std::string, std::string> before(a.begin(), a.end());
  std::vector<KeyDifference> out;
  for (const auto& [key, value] : b) {
    const auto it = before.find(key);
    const std::string old_value = it == before.end() ? "(absent)" : it->second;
    if (old_value != value) out.push_back({key, old_value, value});
    if (it != before.end()) before.erase(it);
  }
  for (const auto& [key, value] : a) {
    if (before.count(key)) out.push_back({key, value, "(absent)"});
  }
  return out;
}

std::vector<std::pair<std::string, std::string>> config_key_values(const Config& cfg) {
  Config copy = cfg;
  std::vector<std::pair<std::string, std::string>> out;
  for_each_field(describe_root(copy), [&out](const std::string& path, const FieldInfo& f) { out.emplace_back(path, value_text(f)); });
  return out;
}

}  // namespace latentmoe::config
