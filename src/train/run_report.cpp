// The JSON run report and the JUnit XML of a training run.
#include "latentmoe/train/run_report.h"

#include <fmt/format.h>

#include <nlohmann/json.hpp>

#include "latentmoe/util/atomic_file.h"
#include "latentmoe/util/error.h"

namespace latentmoe::train {

using json = nlohmann::json;

namespace {

json golden_json(const RunSummary& s) {
  if (s.golden_file.empty()) return nullptr;
  json g = {{"file", s.golden_file}, {"written", s.golden_written}};
  if (!s.golden) return g;
  json checks = json::array();
  for (const GoldenCheck& c : s.golden->checks) {
    checks.push_back({{"name", c.name}, {"passed", c.passed}, {"first_step", c.first_step}, {"where", c.where},
                      {"message", c.message}});
  }
  g.update({{"passed", s.golden->passed()},
            {"mode", s.golden->exact ? "exact" : "tolerance"},
            {"mode_reason", s.golden->mode_reason},
            {"summary", s.golden->summary()},
            {"config_differences", s.golden->config_differences},
            {"checks", checks}});
  return g;
}

struct JunitCase {
  std::string classname, name, failure_kind, message, detail;  // failure_kind: "", "failure" or "error"
  double seconds = 0;
};

std::vector<JunitCase> junit_cases(const RunSummary& s) {
  std::vector<JunitCase> cases;
  const double wall = s.metrics.contains("wall_s") ? s.metrics.at("wall_s") : 0.0;
  JunitCase training{.classname = "latentmoe.train", .name = fmt::format("train {}", s.config_name), .failure_kind = "",
                     .message = "", .detail = "", .seconds = wall};
  if (s.exit_code != kExitOk && (s.status == "error" || s.status == "interrupted")) {
    training.failure_kind = "error";
    training.message = s.error.empty() ? fmt::format("training exited with code {}", s.exit_code) : s.error;
  }
  training.detail = fmt::format("steps {}-{} of {}, exit code {}", s.first_step, s.final_step, s.target_steps, s.exit_code);
  cases.push_back(training);
  for (const ExpectationResult& e : s.expectations) {
    cases.push_back({.classname = "latentmoe.expect", .name = e.expression, .failure_kind = e.passed ? "" : "failure",
                     .message = e.message, .detail = e.message});
  }
  if (s.golden) {
    for (const GoldenCheck& c : s.golden->checks) {
      cases.push_back({.classname = "latentmoe.golden", .name = c.name, .failure_kind = c.passed ? "" : "failure",
                       .message = c.where.empty() ? c.message : fmt::format("{}: {}", c.where, c.message),
                       .detail = fmt::format("{} ({}; golden file {})", c.message,
                                             s.golden->exact ? "exact comparison" : "within tolerance", s.golden_file)});
    }
  }
  return cases;
}

}  // namespace

void finish_summary(RunSummary& s, int training_exit_code) {
  bool checks_pass = true;
  for (const ExpectationResult& e : s.expectations) checks_pass = checks_pass && e.passed;
  if (s.golden) checks_pass = checks_pass && s.golden->passed();
  if (training_exit_code != kExitOk) {
    s.exit_code = training_exit_code;
    constexpr int kInterrupted = 3;  // train::kExitInterrupted (trainer.h, which needs torch)
    s.status = training_exit_code == kInterrupted ? "interrupted" : "error";
  } else {
    s.exit_code = checks_pass ? kExitOk : kExitCheckFailed;
    s.status = checks_pass ? "passed" : "failed";
  }
}

std::string xml_escape(const std::string& text) {
  std::string out;
  out.reserve(text.size());
  for (size_t i = 0; i < text.size();) {
    const auto u = static_cast<unsigned char>(text[i]);
    if (u >= 0x80) {  // copy a whole valid UTF-8 sequence, or write U+FFFD for a broken one
      const size_t length = u >= 0xF0 && u <= 0xF4 ? 4 : u >= 0xE0 ? 3 : u >= 0xC2 && u <= 0xDF ? 2 : 0;
      bool valid = length > 0 && i + length <= text.size();
      for (size_t k = 1; valid && k < length; ++k) valid = (static_cast<unsigned char>(text[i + k]) & 0xC0) == 0x80;
      out += valid ? text.substr(i, length) : "\xEF\xBF\xBD";
      i += valid ? length : 1;
      continue;
    }
    switch (text[i]) {
      case '&': out += "&amp;"; break;
      case '<': out += "&lt;"; break;
      case '>': out += "&gt;"; break;
      case '"': out += "&quot;"; break;
      case '\'': out += "&apos;"; break;
      default:
        if (u >= 0x20 || u == '\n' || u == '\t' || u == '\r') out += text[i];  // other control characters are not XML
    }
    ++i;
  }
  return out;
}

void write_report_json(const std::string& path, const RunSummary& s) {
  json expectations = json::array();
  for (const ExpectationResult& e : s.expectations) {
    expectations.push_back({{"expression", e.expression}, {"passed", e.passed}, {"message", e.message},
                            {"lhs", e.lhs ? json(*e.lhs) : json(nullptr)}, {"rhs", e.rhs ? json(*e.rhs) : json(nullptr)}});
  }
  const RunEnvironment& env = s.environment;
  const json doc = {
      {"format", "latentmoe-train-report"},
      {"version", 1},
      {"status", s.status},
      {"exit_code", s.exit_code},
      {"error", s.error.empty() ? json(nullptr) : json(s.error)},
      {"command", s.command},
      {"started_at", s.started_at},
      {"hostname", s.hostname},
      {"config", {{"name", s.config_name}, {"source", s.config_source}, {"sha256", s.config_sha256}}},
      {"versions", {{"latentmoe", env.latentmoe_version}, {"torch", env.torch_version}, {"compiler", env.compiler}}},
      {"environment",
       {{"cpu", env.cpu_model}, {"cpu_capability", env.cpu_capability}, {"threads", env.threads},
        {"world_size", env.world_size}, {"compute_dtype", env.compute_dtype}, {"data", env.data}}},
      {"steps", {{"first", s.first_step}, {"final", s.final_step}, {"target", s.target_steps}}},
      {"metrics", s.metrics},
      {"checkpoints", s.checkpoints},
      {"expectations", expectations},
      {"golden", golden_json(s)},
  };
  write_text_file_atomically(path, doc.dump(2, ' ', false, json::error_handler_t::replace) + "\n");
}

void write_junit_xml(const std::string& path, const RunSummary& s) {
  const std::vector<JunitCase> cases = junit_cases(s);
  int failures = 0, errors = 0;
  double seconds = 0;
  for (const JunitCase& c : cases) {
    failures += c.failure_kind == "failure";
    errors += c.failure_kind == "error";
    seconds += c.seconds;
  }
  const std::string suite = xml_escape(fmt::format("latentmoe train {}", s.config_name));
  std::string xml = "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n";
  xml += fmt::format("<testsuites name=\"{}\" tests=\"{}\" failures=\"{}\" errors=\"{}\" skipped=\"0\" time=\"{:.3f}\" "
                     "timestamp=\"{}\">\n",
                     suite, cases.size(), failures, errors, seconds, xml_escape(s.started_at));
  xml += fmt::format("  <testsuite name=\"{}\" tests=\"{}\" failures=\"{}\" errors=\"{}\" skipped=\"0\" time=\"{:.3f}\" "
                     "timestamp=\"{}\" hostname=\"{}\">\n",
                     suite, cases.size(), failures, errors, seconds, xml_escape(s.started_at), xml_escape(s.hostname));
  xml += "    <properties>\n";
  const std::vector<std::pair<std::string, std::string>> properties = {
      {"config", s.config_source},         {"config_sha256", s.config_sha256},       {"latentmoe", s.environment.latentmoe_version},
      {"torch", s.environment.torch_version}, {"threads", std::to_string(s.environment.threads)},
      {"compute_dtype", s.environment.compute_dtype}, {"exit_code", std::to_string(s.exit_code)}};
  for (const auto& [name, value] : properties) {
    xml += fmt::format("      <property name=\"{}\" value=\"{}\"/>\n", xml_escape(name), xml_escape(value));
  }
  xml += "    </properties>\n";
  for (const JunitCase& c : cases) {
    xml += fmt::format("    <testcase classname=\"{}\" name=\"{}\" time=\"{:.3f}\"", xml_escape(c.classname),
                       xml_escape(c.name), c.seconds);
    if (c.failure_kind.empty()) {
      xml += fmt::format(">\n      <system-out>{}</system-out>\n    </testcase>\n", xml_escape(c.detail));
    } else {
      xml += fmt::format(">\n      <{} message=\"{}\" type=\"{}\">{}</{}>\n    </testcase>\n", c.failure_kind,
                         xml_escape(c.message), c.classname == "latentmoe.golden" ? "golden" : c.failure_kind == "error" ? "training" : "expectation",
                         xml_escape(c.detail), c.failure_kind);
    }
  }
  xml += "  </testsuite>\n</testsuites>\n";
  write_text_file_atomically(path, xml);
}

}  // namespace latentmoe::train
