// Generic walkers over the declared schema: type names, one-level listings, leaf iteration and
// equality. Everything here is driven by the describe() declarations, never by field lists.
#include "latentmoe/config/schema.h"

#include "latentmoe/config/config.h"

namespace latentmoe::config {

namespace {
template <class... Ts>
struct Overloaded : Ts... {
  using Ts::operator()...;
};
template <class... Ts>
Overloaded(Ts...) -> Overloaded<Ts...>;

class LevelCollector final : public FieldVisitor {
 public:
  explicit LevelCollector(SchemaLevel& out) : out_(out) {}
  void field(const FieldInfo& info) override { out_.fields.push_back(info); }
  void section(std::string_view name, std::string_view doc,
               const std::function<void(FieldVisitor&)>& describe_fields) override {
    out_.sections.push_back({std::string(name), std::string(doc), describe_fields});
  }

 private:
  SchemaLevel& out_;
};

class LeafWalker final : public FieldVisitor {
 public:
  LeafWalker(std::string prefix, const std::function<void(const std::string&, const FieldInfo&)>& fn)
      : prefix_(std::move(prefix)), fn_(fn) {}
  void field(const FieldInfo& info) override { fn_(prefix_ + std::string(info.name), info); }
  void section(std::string_view name, std::string_view,
               const std::function<void(FieldVisitor&)>& describe_fields) override {
    LeafWalker inner(prefix_ + std::string(name) + ".", fn_);
    describe_fields(inner);
  }

 private:
  std::string prefix_;
  const std::function<void(const std::string&, const FieldInfo&)>& fn_;
};
}  // namespace

std::string field_type_name(const FieldInfo& info) {
  if (!info.choices.empty()) {
    std::string out = "one of";
    for (size_t i = 0; i < info.choices.size(); ++i) {
      out += (i ? ", '" : " '") + std::string(info.choices[i]) + "'";
    }
    return out;
  }
  return std::visit(Overloaded{
                        [](int64_t*) -> std::string { return "int"; },
                        [](double*) -> std::string { return "float"; },
                        [](bool*) -> std::string { return "bool"; },
                        [](std::string*) -> std::string { return "string"; },
                        [](std::optional<int64_t>*) -> std::string { return "int or null"; },
                        [](std::vector<int64_t>*) -> std::string { return "list of int"; },
                        [](std::vector<double>*) -> std::string { return "list of float"; },
                        [](std::vector<std::string>*) -> std::string { return "list of string"; },
                    },
                    info.ref);
}

const FieldInfo* SchemaLevel::find_field(std::string_view name) const {
  for (const auto& f : fields) {
    if (f.name == name) return &f;
  }
  return nullptr;
}

const SchemaLevel::Section* SchemaLevel::find_section(std::string_view name) const {
  for (const auto& s : sections) {
    if (s.name == name) return &s;
  }
  return nullptr;
}

std::vector<std::string> SchemaLevel::names() const {
  std::vector<std::string> out;
  for (const auto& f : fields) out.emplace_back(f.name);
  for (const auto& s : sections) out.push_back(s.name);
  return out;
}

SchemaLevel collect_level(const std::function<void(FieldVisitor&)>& describe_fields) {
  SchemaLevel level;
  LevelCollector collector(level);
  describe_fields(collector);
  return level;
}

void for_each_field(const std::function<void(FieldVisitor&)>& describe_fields,
                    const std::function<void(const std::string&, const FieldInfo&)>& fn,
                    const std::string& prefix) {
  LeafWalker walker(prefix, fn);
  describe_fields(walker);
}

bool operator==(const Config& a, const Config& b) {
  // Layer-type sections give the two configs different keys when their types differ.
  Config lhs = a;
  Config rhs = b;
  std::vector<std::pair<std::string, FieldRef>> right;
  for_each_field(describe_root(rhs), [&](const std::string& path, const FieldInfo& f) { right.emplace_back(path, f.ref); });
  size_t i = 0;
  bool equal = true;
  for_each_field(describe_root(lhs), [&](const std::string& path, const FieldInfo& f) {
    if (!equal) return;
    if (i >= right.size() || right[i].first != path || right[i].second.index() != f.ref.index()) {
      equal = false;
      return;
    }
    std::visit([&](auto* left) { equal = *left == *std::get<decltype(left)>(right[i].second); }, f.ref);
    ++i;
  });
  return equal && i == right.size();
}

}  // namespace latentmoe::config
