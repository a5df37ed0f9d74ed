// Parsing and evaluating `--expect` expressions.
#include "latentmoe/train/expectations.h"

#include <fmt/format.h>

#include <algorithm>
#include <cctype>
#include <cmath>
#include <cstdlib>

#include "latentmoe/config/loader.h"
#include "latentmoe/util/error.h"

namespace latentmoe::train {

namespace {

std::vector<std::string> metric_names() {
  std::vector<std::string> names;
  for (const auto& m : expectation_metrics()) names.push_back(m.name);
  return names;
}

std::string trim(const std::string& s) {
  const size_t a = s.find_first_not_of(" \t");
  if (a == std::string::npos) return "";
  return s.substr(a, s.find_last_not_of(" \t") - a + 1);
}

[[noreturn]] void fail(const std::string& text, const std::string& what) {
  throw ConfigError(fmt::format("--expect '{}': {}; the form is METRIC OP VALUE (OP: < <= > >= == !=), "
                                "e.g. --expect 'valid_loss<5.5' (metrics: `latentmoe train --help` or docs/ci.md)",
                                text, what));
}

Expectation::Operand parse_operand(const std::string& expression, const std::string& raw, const char* side) {
  const std::string s = trim(raw);
  if (s.empty()) fail(expression, fmt::format("the {} side is empty", side));
  if (std::isalpha(static_cast<unsigned char>(s[0])) || s[0] == '_') {
    for (char c : s) {
      if (!std::isalnum(static_cast<unsigned char>(c)) && c != '_') {
        fail(expression, fmt::format("'{}' is neither a metric name nor a number", s));
      }
    }
    const auto names = metric_names();
    if (std::find(names.begin(), names.end(), s) == names.end()) {
      const std::string guess = config::closest_match(s, names);
      fail(expression, fmt::format("unknown metric '{}'{}", s, guess.empty() ? "" : fmt::format(" (did you mean '{}'?)", guess)));
    }
    return s;
  }
  char* end = nullptr;
  const double v = std::strtod(s.c_str(), &end);
  if (end != s.c_str() + s.size() || !std::isfinite(v)) fail(expression, fmt::format("'{}' is not a finite number", s));
  return v;
}

std::optional<double> value_of(const Expectation::Operand& operand, const std::map<std::string, double>& metrics) {
  if (const double* v = std::get_if<double>(&operand)) return *v;
  const auto it = metrics.find(std::get<std::string>(operand));
  if (it == metrics.end()) return std::nullopt;
  return it->second;
}

std::string operand_text(const Expectation::Operand& operand, const std::optional<double>& value) {
  if (std::holds_alternative<double>(operand)) return "";
  return fmt::format("{} = {}", std::get<std::string>(operand), value ? fmt::format("{:.6g}", *value) : "not available");
}

}  // namespace

const std::vector<ExpectationMetric>& expectation_metrics() {
  static const std::vector<ExpectationMetric> metrics = {
      {"steps", "optimizer steps this run trained (after a resume: only the new ones)"},
      {"final_step", "the step the run ended at"},
      {"tokens", "tokens trained on up to the final step"},
      {"loss", "total training loss of the final step"},
      {"lm_loss", "next-token loss of the final step"},
      {"mtp_loss", "MTP loss of the final step (weighted, as in loss)"},
      {"balance_loss", "sequence-wise balance loss of the final step"},
      {"z_loss", "router z-loss of the final step"},
      {"grad_norm", "gradient norm of the final step (before clipping)"},
      {"valid_loss", "validation loss at the end (needs data.valid_fraction > 0 and train.eval_batches > 0)"},
      {"valid_perplexity", "exp(valid_loss)"},
      {"unigram_entropy", "entropy of the training tokens' unigram distribution (nats): a unigram model's loss"},
      {"entropy_gap", "unigram_entropy - valid_loss (> 0: the model beats the unigram model)"},
      {"tokens_per_s", "median training throughput over the run's steps after the first"},
      {"step_time_s", "median step time over the run's steps after the first"},
      {"wall_s", "wall time from the start of `train` (config loaded) to the end of training and final validation"},
      {"peak_rss_mb", "peak resident memory of the process (MiB)"},
      {"max_violation", "largest expert-load MaxVio over the MoE layers at the final step"},
      {"skipped_steps", "updates skipped as loss spikes during this run"},
  };
  return metrics;
}

Expectation parse_expectation(const std::string& text) {
  const size_t at = text.find_first_of("<>=!");
  if (at == std::string::npos) fail(text, "no comparison operator");
  const bool two = at + 1 < text.size() && text[at + 1] == '=';
  const std::string op = text.substr(at, two ? 2 : 1);
  if (op == "=" || op == "!") fail(text, fmt::format("'{}' is not an operator", op));
  const std::string rest = text.substr(at + op.size());
  if (rest.find_first_of("<>=!") != std::string::npos) fail(text, "only one comparison is allowed");
  Expectation e;
  e.text = text;
  e.op = op;
  e.lhs = parse_operand(text, text.substr(0, at), "left");
  e.rhs = parse_operand(text, rest, "right");
  if (std::holds_alternative<double>(e.lhs) && std::holds_alternative<double>(e.rhs)) {
    fail(text, "at least one side must be a metric");
  }
  return e;
}

ExpectationResult evaluate_expectation(const Expectation& e, const std::map<std::string, double>& metrics) {
  ExpectationResult r;
  r.expression = e.text;
  r.lhs = value_of(e.lhs, metrics);
  r.rhs = value_of(e.rhs, metrics);
  std::string values = operand_text(e.lhs, r.lhs);
  const std::string right = operand_text(e.rhs, r.rhs);
  if (!right.empty()) values += (values.empty() ? "" : ", ") + right;
  if (!r.lhs || !r.rhs) {
    r.message = fmt::format("{} failed: {} (this run did not produce it)", e.text, values);
    return r;
  }
  const double a = *r.lhs, b = *r.rhs;
  r.passed = e.op == "<" ? a < b : e.op == "<=" ? a <= b : e.op == ">" ? a > b : e.op == ">=" ? a >= b : e.op == "==" ? a == b : a != b;
  r.message = fmt::format("{} {}: {}", e.text, r.passed ? "holds" : "failed", values);
  return r;
}

}  // namespace latentmoe::train
