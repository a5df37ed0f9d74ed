// The config schema machinery: every field is declared once (name, typed reference, doc, and for
// string enums the allowed values) inside its section's describe(); loaders, the dumper, the
// docs generator and equality all walk the same declarations. No torch headers here.
#pragma once

#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <string_view>
#include <variant>
#include <vector>

namespace latentmoe::config {

using FieldRef = std::variant<int64_t*, double*, bool*, std::string*, std::optional<int64_t>*,
                              std::vector<int64_t>*, std::vector<double>*, std::vector<std::string>*>;

struct FieldInfo {
  std::string_view name;
  FieldRef ref;
  std::string_view doc;
  // Non-empty for string fields that take one of a fixed set of values.
  std::vector<std::string_view> choices = {};
};

class FieldVisitor {
 public:
  virtual ~FieldVisitor() = default;
  virtual void field(const FieldInfo& info) = 0;
  // A nested section; describe_fields declares its fields on the visitor it is given.
  virtual void section(std::string_view name, std::string_view doc,
                       const std::function<void(FieldVisitor&)>& describe_fields) = 0;
  // Sections that select a layer type (config/layer_choice.h) declare only the chosen type's keys,
  // except to visitors that document the schema: those get one variant() per registered type.
  virtual bool documents_all_variants() const { return false; }
  virtual void variant(std::string_view type, std::string_view doc,
                       const std::function<void(FieldVisitor&)>& describe_fields) {
    (void)type, (void)doc, (void)describe_fields;
  }
};

// Human-readable type of a field, as used in error messages and docs ("int", "list of float", ...).
std::string field_type_name(const FieldInfo& info);

// Lists the fields and sections directly declared by describe_fields (one level, no recursion).
struct SchemaLevel {
  std::vector<FieldInfo> fields;
  struct Section {
    std::string name;
    std::string doc;
    std::function<void(FieldVisitor&)> describe;
  };
  std::vector<Section> sections;

  const FieldInfo* find_field(std::string_view name) const;
  const Section* find_section(std::string_view name) const;
  std::vector<std::string> names() const;
};
SchemaLevel collect_level(const std::function<void(FieldVisitor&)>& describe_fields);

// Calls fn(dotted_path, info) for every leaf field, depth first in declaration order.
void for_each_field(const std::function<void(FieldVisitor&)>& describe_fields,
                    const std::function<void(const std::string&, const FieldInfo&)>& fn,
                    const std::string& prefix = "");

}  // namespace latentmoe::config
