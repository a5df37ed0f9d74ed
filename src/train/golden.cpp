// Golden run files (JSON, doubles written with round-trip precision so exact checks are exact)
// and the step-by-step comparison of a run against one.
#include "latentmoe/train/golden.h"

#include <fmt/format.h>
#include <fmt/ranges.h>

#include <algorithm>
#include <cmath>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "latentmoe/util/atomic_file.h"
#include "latentmoe/util/error.h"

namespace latentmoe::train {

using json = nlohmann::json;

namespace {

constexpr const char* kFormat = "latentmoe-golden";
constexpr int kFormatVersion = 1;

// The six per-step scalars every golden file holds, in the order checks are reported.
const std::vector<std::string>& scalar_metric_names() {
  static const std::vector<std::string> names = {"loss/total", "loss/lm", "loss/mtp", "loss/balance", "loss/z", "grad_norm"};
  return names;
}

json environment_json(const RunEnvironment& e) {
  return {{"latentmoe", e.latentmoe_version}, {"torch", e.torch_version},       {"compiler", e.compiler},
          {"cpu", e.cpu_model},                {"cpu_capability", e.cpu_capability}, {"compute_dtype", e.compute_dtype},
          {"threads", e.threads},              {"world_size", e.world_size},         {"data", e.data}};
}

json bounds_json(const GoldenBounds& b) {
  return {{"loss_rtol", b.loss_rtol}, {"aux_loss_rtol", b.aux_loss_rtol}, {"grad_norm_rtol", b.grad_norm_rtol},
          {"load_atol", b.load_atol}};
}

// Reads typed values out of the parsed file; every failure names the file and the key path.
class Reader {
 public:
  explicit Reader(std::string path) : path_(std::move(path)) {}

  const json& at(const json& object, const std::string& key, const std::string& where) const {
    if (!object.is_object() || !object.contains(key)) fail(where.empty() ? key : where + "." + key, "is missing");
    return object.at(key);
  }
  template <typename T>
  T get(const json& object, const std::string& key, const std::string& where) const {
    const json& v = at(object, key, where);
    try {
      return v.get<T>();
    } catch (const json::exception&) {
      fail(where.empty() ? key : where + "." + key, fmt::format("has the wrong type ({})", v.type_name()));
    }
  }
  [[noreturn]] void fail(const std::string& key, const std::string& what) const {
    throw ConfigError(fmt::format("golden file {}: '{}' {}; re-record it with `latentmoe train ... --golden {} "
                                  "--golden-write`",
                                  path_, key, what, path_));
  }

 private:
  std::string path_;
};

GoldenBounds read_bounds(const Reader& r, const json& object, const std::string& where) {
  const GoldenBounds b{.loss_rtol = r.get<double>(object, "loss_rtol", where),
                       .aux_loss_rtol = r.get<double>(object, "aux_loss_rtol", where),
                       .grad_norm_rtol = r.get<double>(object, "grad_norm_rtol", where),
                       .load_atol = r.get<double>(object, "load_atol", where)};
  for (const auto& [key, value] : {std::pair{"loss_rtol", b.loss_rtol}, {"aux_loss_rtol", b.aux_loss_rtol},
                                   {"grad_norm_rtol", b.grad_norm_rtol}, {"load_atol", b.load_atol}}) {
    if (!(value >= 0) || !std::isfinite(value)) r.fail(where + "." + key, fmt::format("is {}; it must be >= 0", value));
  }
  return b;
}

std::string describe_steps(const std::vector<RunStep>& steps) {
  if (steps.empty()) return "no steps";
  return fmt::format("steps {}-{}", steps.front().step, steps.back().step);
}

// A GoldenCheck that remembers its earliest failure and the largest deviation seen.
struct CheckBuilder {
  explicit CheckBuilder(std::string name) { check.name = std::move(name); }
  GoldenCheck check;
  int64_t failures = 0;
  double worst = 0;
  void fail(int64_t step, const std::string& where, const std::string& message) {
    if (failures++ == 0) {
      check.passed = false;
      check.first_step = step;
      check.where = where;
      check.message = message;
    }
  }
  GoldenCheck finish(const std::string& compared) {
    if (check.passed) {
      check.message = compared;
    } else if (failures > 1) {
      check.message += fmt::format(" (and {} later comparison(s) out of tolerance)", failures - 1);
    }
    return check;
  }
};

double relative_difference(double actual, double golden) {
  return std::abs(actual - golden) / std::max(std::abs(golden), 1e-6);
}

std::vector<std::string> environment_differences(const RunEnvironment& g, const RunEnvironment& r) {
  std::vector<std::string> out;
  auto add = [&out](const char* what, const std::string& a, const std::string& b) {
    if (a != b) out.push_back(fmt::format("{} {} → {}", what, a, b));
  };
  add("latentmoe", g.latentmoe_version, r.latentmoe_version);
  add("torch", g.torch_version, r.torch_version);
  add("compiler", g.compiler, r.compiler);
  add("cpu", g.cpu_model, r.cpu_model);
  add("cpu capability", g.cpu_capability, r.cpu_capability);
  add("compute dtype", g.compute_dtype, r.compute_dtype);
  add("threads", std::to_string(g.threads), std::to_string(r.threads));
  add("world size", std::to_string(g.world_size), std::to_string(r.world_size));
  if (g.data != r.data) out.push_back("training data or tokenizer (fingerprint " + g.data.substr(0, 12) + " → " + r.data.substr(0, 12) + ")");
  return out;
}

}  // namespace

GoldenTolerance default_golden_tolerance(const std::string& compute_dtype) {
  // Measured with bench/golden_drift.py over the committed golden runs (docs/ci.md "Tolerances"):
  // between 1 and 2 threads the first ~12 steps differ by <= 6e-7 in the gradient norm and <= 1e-7
  // in the losses on an AVX2 CPU (AMD EPYC). On an AVX-512 Xeon (MKL splits the GEMMs differently
  // per thread count) a tiny run with a 2-step warm-up differs by up to 1.1e-5 in the gradient norm
  // and 8.9e-5 in the balance loss (a ~2e-4 value whose near-tied routing choices amplify rounding)
  // while the LM losses stay within 1.1e-6. From step ~20 on the runs
  // drift apart like two seeds: means over 10 steps differ by up to ~6e-3 (LM/MTP losses), ~2e-2
  // (balance loss), 0.28 (gradient norm) and 0.22 (an expert's share of the tokens). The bounds
  // leave a margin of about 2x or more early and late (the LM loss bound, 2e-6, is what catches
  // a wrong change within 2 steps: balancing sign, rope base, learning rate); bf16 gets 10x looser
  // early bounds for CPUs whose bf16 kernels round differently.
  //
  // bf16 across CPU kinds (the debug-bf16 golden run, recorded on an AVX-512 Xeon, checked on an
  // AMD EPYC; fp32 GEMMs on bf16-rounded operands on both): steps 1-6 agree to <= 3.5e-6 in the
  // losses, 1.8e-5 in the balance loss, 2.1e-4 in the gradient norm and 0.004 in an expert's
  // share, but at steps 7-9 a near-tied router choice flips (balance loss 2.9e-3, gradient norm
  // 6.3e-3, an expert's share 0.49): bf16 compares 6 steps one by one, its gradient norm within 1e-3.
  const bool bf16 = compute_dtype == "bf16";
  const double early_scale = bf16 ? 10.0 : 1.0;
  return {.early_steps = bf16 ? 6 : 10,
          .early = {.loss_rtol = 2e-6 * early_scale, .aux_loss_rtol = 2e-4 * early_scale,
                    .grad_norm_rtol = bf16 ? 1e-3 : 3e-5, .load_atol = 0.01 * early_scale},
          .window = 10,
          .late = {.loss_rtol = 2e-2, .aux_loss_rtol = 0.1, .grad_norm_rtol = 0.6, .load_atol = 0.45}};
}

void write_golden(const std::string& path, const GoldenRecord& record) {
  json steps = json::array();
  for (const RunStep& s : record.steps) {
    json row = {{"step", s.step}};
    for (const auto& [name, value] : s.scalars) row[name] = value;
    row["expert_load"] = s.expert_load;
    steps.push_back(std::move(row));
  }
  json config = json::object();
  for (const auto& [key, value] : record.config) config[key] = value;
  const json doc = {{"format", kFormat},
                    {"version", kFormatVersion},
                    {"command", record.command},
                    {"environment", environment_json(record.environment)},
                    {"config_sha256", record.config_sha256},
                    {"config", config},
                    {"tolerance",
                     {{"early_steps", record.tolerance.early_steps},
                      {"early", bounds_json(record.tolerance.early)},
                      {"window", record.tolerance.window},
                      {"late", bounds_json(record.tolerance.late)}}},
                    {"steps", steps}};
  write_text_file_atomically(path, doc.dump(1, ' ', false, json::error_handler_t::replace) + "\n");
}

GoldenRecord read_golden(const std::string& path) {
  std::ifstream in(path);
  if (!in) throw ConfigError(fmt::format("golden file {}: cannot be read (record one with --golden {} --golden-write)", path, path));
  std::stringstream text;
  text << in.rdbuf();
  json doc;
  try {
    doc = json::parse(text.str());
  } catch (const json::parse_error& e) {
    throw ConfigError(fmt::format("golden file {}: not valid JSON ({})", path, e.what()));
  }
  const Reader r(path);
  if (r.get<std::string>(doc, "format", "") != kFormat) r.fail("format", fmt::format("is not \"{}\"", kFormat));
  if (const int v = r.get<int>(doc, "version", ""); v != kFormatVersion) {
    r.fail("version", fmt::format("is {}, this build reads version {}", v, kFormatVersion));
  }
  GoldenRecord g;
  const json& env = r.at(doc, "environment", "");
  g.environment = {.latentmoe_version = r.get<std::string>(env, "latentmoe", "environment"),
                   .torch_version = r.get<std::string>(env, "torch", "environment"),
                   .compiler = r.get<std::string>(env, "compiler", "environment"),
                   .cpu_model = r.get<std::string>(env, "cpu", "environment"),
                   .cpu_capability = r.get<std::string>(env, "cpu_capability", "environment"),
                   .compute_dtype = r.get<std::string>(env, "compute_dtype", "environment"),
                   .threads = r.get<int64_t>(env, "threads", "environment"),
                   .world_size = r.get<int64_t>(env, "world_size", "environment"),
                   .data = r.get<std::string>(env, "data", "environment")};
  g.config_sha256 = r.get<std::string>(doc, "config_sha256", "");
  const json& config = r.at(doc, "config", "");
  if (!config.is_object()) r.fail("config", "is not an object");
  for (const auto& [key, value] : config.items()) {
    if (!value.is_string()) r.fail("config." + key, "is not a string");
    g.config.emplace_back(key, value.get<std::string>());
  }
  g.command = r.get<std::vector<std::string>>(doc, "command", "");
  const json& tol = r.at(doc, "tolerance", "");
  g.tolerance = {.early_steps = r.get<int64_t>(tol, "early_steps", "tolerance"),
                 .early = read_bounds(r, r.at(tol, "early", "tolerance"), "tolerance.early"),
                 .window = r.get<int64_t>(tol, "window", "tolerance"),
                 .late = read_bounds(r, r.at(tol, "late", "tolerance"), "tolerance.late")};
  if (g.tolerance.early_steps < 0) r.fail("tolerance.early_steps", fmt::format("is {}; it must be >= 0", g.tolerance.early_steps));
  if (g.tolerance.window < 1) r.fail("tolerance.window", fmt::format("is {}; it must be >= 1", g.tolerance.window));
  const json& steps = r.at(doc, "steps", "");
  if (!steps.is_array() || steps.empty()) r.fail("steps", "must be a non-empty array");
  for (size_t i = 0; i < steps.size(); ++i) {
    const std::string where = fmt::format("steps[{}]", i);
    RunStep s;
    s.step = r.get<int64_t>(steps[i], "step", where);
    if (i > 0 && s.step != g.steps.back().step + 1) r.fail(where + ".step", fmt::format("is {}, expected {}", s.step, g.steps.back().step + 1));
    for (const std::string& name : scalar_metric_names()) {
      const double v = r.get<double>(steps[i], name, where);
      if (!std::isfinite(v)) r.fail(where + "." + name, "is not finite");
      s.scalars[name] = v;
    }
    s.expert_load = r.get<std::vector<std::vector<int64_t>>>(steps[i], "expert_load", where);
    g.steps.push_back(std::move(s));
  }
  return g;
}

GoldenMode parse_golden_mode(const std::string& text) {
  if (text == "auto") return GoldenMode::automatic;
  if (text == "exact") return GoldenMode::exact;
  if (text == "tolerance") return GoldenMode::tolerance;
  throw ConfigError(fmt::format("--golden-mode '{}': allowed values are auto, exact, tolerance", text));
}

bool is_output_config_key(const std::string& key) { return key.starts_with("checkpoint.") || key.starts_with("logging."); }

std::vector<std::string> config_differences(const std::vector<std::pair<std::string, std::string>>& golden,
                                            const std::vector<std::pair<std::string, std::string>>& run) {
  std::map<std::string, std::string> in_run(run.begin(), run.end());
  std::vector<std::string> out;
  for (const auto& [key, value] : golden) {
    if (is_output_config_key(key)) continue;
    const auto it = in_run.find(key);
    if (it == in_run.end()) {
      out.push_back(fmt::format("{}: {} → (not in this build's schema)", key, value));
    } else if (it->second != value) {
      out.push_back(fmt::format("{}: {} → {}", key, value, it->second));
    }
    if (it != in_run.end()) in_run.erase(it);
  }
  for (const auto& [key, value] : in_run) {
    if (!is_output_config_key(key)) out.push_back(fmt::format("{}: (not in the golden file) → {}", key, value));
  }
  return out;
}

bool GoldenReport::passed() const {
  return std::all_of(checks.begin(), checks.end(), [](const GoldenCheck& c) { return c.passed; });
}

std::string GoldenReport::summary() const {
  const GoldenCheck* first = nullptr;
  std::vector<std::string> failing;
  for (const GoldenCheck& c : checks) {
    if (c.passed) continue;
    failing.push_back(c.name);
    if (!first || (c.first_step > 0 && (first->first_step == 0 || c.first_step < first->first_step))) first = &c;
  }
  const std::string mode = exact ? "exact" : "within tolerance";
  if (!first) return fmt::format("golden check passed ({} metrics, {}: {})", checks.size(), mode, mode_reason);
  std::string line = first->first_step > 0
                         ? fmt::format("golden check failed: first divergence at {} in {}: {}", first->where, first->name,
                                       first->message)
                         : fmt::format("golden check failed: {}: {}", first->name, first->message);
  line += fmt::format(" [{} check(s) failing: {}; comparison {}: {}]", failing.size(), fmt::join(failing, ", "), mode, mode_reason);
  if (!config_differences.empty()) {
    line += fmt::format(" [config differs from the golden run: {}]", fmt::join(config_differences, "; "));
  }
  return line;
}

namespace {

// The steps compared together: single steps (exact mode, and the early steps) or windows whose
// means are compared (later steps in tolerance mode). bounds == nullptr: bit-identical.
struct Unit {
  int64_t first = 0, last = 0;
  const GoldenBounds* bounds = nullptr;
  std::string label() const {
    return first == last ? fmt::format("step {}", first) : fmt::format("steps {}-{} (means)", first, last);
  }
};

std::vector<Unit> comparison_units(const std::vector<RunStep>& steps, bool exact, const GoldenTolerance& tol) {
  std::vector<Unit> units;
  for (size_t i = 0; i < steps.size();) {
    const int64_t step = steps[i].step;
    if (exact || step <= tol.early_steps) {
      units.push_back({step, step, exact ? nullptr : &tol.early});
      ++i;
    } else {
      size_t end = std::min(steps.size(), i + static_cast<size_t>(tol.window));
      if (steps.size() - end < static_cast<size_t>(tol.window)) end = steps.size();  // no short last window: join it
      units.push_back({step, steps[end - 1].step, &tol.late});
      i = end;
    }
  }
  return units;
}

std::string format_value(double v, bool exact) { return exact ? fmt::format("{:.17g}", v) : fmt::format("{:.9g}", v); }

}  // namespace

GoldenReport compare_golden(const GoldenRecord& golden, const GoldenRecord& run, GoldenMode mode) {
  GoldenReport report;
  const std::vector<std::string> env_diff = environment_differences(golden.environment, run.environment);
  if (mode == GoldenMode::exact) {
    report.exact = true;
    report.mode_reason = "forced by --golden-mode exact";
  } else if (mode == GoldenMode::tolerance) {
    report.mode_reason = "forced by --golden-mode tolerance";
  } else {
    report.exact = env_diff.empty();
    report.mode_reason = env_diff.empty() ? "same environment" : fmt::format("environment differs: {}", fmt::join(env_diff, ", "));
  }
  report.config_differences = config_differences(golden.config, run.config);

  std::map<int64_t, const RunStep*> run_steps;
  for (const RunStep& s : run.steps) run_steps[s.step] = &s;
  CheckBuilder steps("steps");
  if (golden.steps.size() != run.steps.size() ||
      (!run.steps.empty() && golden.steps.front().step != run.steps.front().step)) {
    steps.fail(0, "", fmt::format("the run trained {}, the golden file holds {} (train from scratch with the same "
                              "train.steps, into an empty checkpoint.dir)",
                              describe_steps(run.steps), describe_steps(golden.steps)));
  }
  report.checks.push_back(steps.finish(fmt::format("{} compared", describe_steps(golden.steps))));

  // The golden and run steps of each unit that both have.
  const std::vector<Unit> units = comparison_units(golden.steps, report.exact, golden.tolerance);
  std::vector<std::vector<std::pair<const RunStep*, const RunStep*>>> pairs(units.size());
  for (size_t u = 0, i = 0; u < units.size(); ++u) {
    for (; i < golden.steps.size() && golden.steps[i].step <= units[u].last; ++i) {
      if (const auto it = run_steps.find(golden.steps[i].step); it != run_steps.end()) pairs[u].emplace_back(&golden.steps[i], it->second);
    }
  }

  for (const std::string& name : scalar_metric_names()) {
    CheckBuilder check(name);
    for (size_t u = 0; u < units.size(); ++u) {
      if (pairs[u].empty()) continue;
      double expected = 0, actual = 0;
      bool recorded = true;
      for (const auto& [g, r] : pairs[u]) {
        const auto value = r->scalars.find(name);
        recorded = recorded && value != r->scalars.end();
        if (!recorded) break;
        expected += g->scalars.at(name) / static_cast<double>(pairs[u].size());
        actual += value->second / static_cast<double>(pairs[u].size());
      }
      if (!recorded) {
        check.fail(units[u].first, units[u].label(), "the run did not record it");
        continue;
      }
      const double rel = relative_difference(actual, expected);
      check.worst = std::max(check.worst, rel);
      const GoldenBounds* b = units[u].bounds;
      const double rtol = !b                                              ? 0.0
                          : name == "grad_norm"                           ? b->grad_norm_rtol
                          : name == "loss/balance" || name == "loss/z" ? b->aux_loss_rtol
                                                                          : b->loss_rtol;
      if (b ? !(rel <= rtol) : actual != expected) {  // NaN fails either way
        check.fail(units[u].first, units[u].label(), fmt::format("{} vs golden {}: {}", format_value(actual, !b),
                                               format_value(expected, !b),
                                               b ? fmt::format("relative difference {:.2e} > tolerance {:.1e}", rel, rtol)
                                                 : fmt::format("not bit-identical (relative difference {:.2e})", rel)));
      }
    }
    report.checks.push_back(check.finish(fmt::format("largest relative difference {:.2e}", check.worst)));
  }

  const size_t layers = golden.steps.empty() ? 0 : golden.steps.front().expert_load.size();
  for (size_t layer = 0; layer < layers; ++layer) {
    CheckBuilder check(fmt::format("expert_load/layer{}", layer));
    for (size_t u = 0; u < units.size(); ++u) {
      std::vector<int64_t> expected, actual;
      std::string mismatch;
      for (const auto& [g, r] : pairs[u]) {
        if (g->expert_load.size() != r->expert_load.size()) {
          mismatch = fmt::format("the run has {} MoE layer load(s) at step {}, the golden file {}", r->expert_load.size(),
                                 g->step, g->expert_load.size());
          break;
        }
        if (layer >= g->expert_load.size()) continue;  // a skipped step: no loads on either side
        const auto& ge = g->expert_load[layer];
        const auto& re = r->expert_load[layer];
        if (ge.size() != re.size()) {
          mismatch = fmt::format("{} experts at step {} vs golden {}", re.size(), g->step, ge.size());
          break;
        }
        expected.resize(ge.size(), 0);
        actual.resize(re.size(), 0);
        for (size_t e = 0; e < ge.size(); ++e) expected[e] += ge[e], actual[e] += re[e];
      }
      if (!mismatch.empty()) {
        check.fail(units[u].first, units[u].label(), mismatch);
        continue;
      }
      int64_t tokens = 0;
      for (int64_t v : expected) tokens += v;
      const GoldenBounds* b = units[u].bounds;
      // After the early steps the runs drift apart like two seeds, and which expert a near-tied
      // router starves is as arbitrary as between seeds: the windows compare the load
      // distributions (busiest expert with busiest, and so on), which the code determines.
      const bool by_rank = b && units[u].first != units[u].last;
      if (by_rank) {
        std::sort(expected.begin(), expected.end(), std::greater<>());
        std::sort(actual.begin(), actual.end(), std::greater<>());
      }
      for (size_t e = 0; e < expected.size(); ++e) {
        const double share = tokens > 0 ? static_cast<double>(std::abs(actual[e] - expected[e])) / static_cast<double>(tokens) : 0.0;
        check.worst = std::max(check.worst, share);
        if (b ? !(share <= b->load_atol) : actual[e] != expected[e]) {
          check.fail(units[u].first, units[u].label(),
                     fmt::format("{} received {} tokens vs golden {} (a difference of {:.4f} of the layer's {} "
                                 "routed tokens{})",
                                 by_rank ? fmt::format("the expert ranked {} by load", e + 1) : fmt::format("expert {}", e),
                                 actual[e], expected[e], share, tokens,
                                 b ? fmt::format(" > tolerance {}", b->load_atol) : ", not bit-identical"));
          break;
        }
      }
    }
    report.checks.push_back(check.finish(fmt::format("largest difference {:.2e} of the layer's tokens", check.worst)));
  }
  return report;
}

}  // namespace latentmoe::train
