// `train --expect EXPR`: assertions over a run's final metrics, e.g. 'valid_loss<5.5',
// 'tokens_per_s>=2000', 'valid_loss < unigram_entropy'. Grammar: OPERAND OP OPERAND, where an
// operand is a metric name (expectation_metrics()) or a finite number and OP is one of
// < <= > >= == !=. Several --expect flags must all hold. No torch headers.
#pragma once

#include <map>
#include <optional>
#include <string>
#include <variant>
#include <vector>

namespace latentmoe::train {

struct ExpectationMetric {
  std::string name;
  std::string doc;
};
// Every metric an expectation may name, with its definition (README and docs/ci.md list them).
const std::vector<ExpectationMetric>& expectation_metrics();

struct Expectation {
  using Operand = std::variant<double, std::string>;  // a number or a metric name
  std::string text;  // as given
  Operand lhs, rhs;
  std::string op;
};

// Throws ConfigError naming --expect, the expression and what is wrong (unknown metric with a
// did-you-mean, missing operator, bad number).
Expectation parse_expectation(const std::string& text);

struct ExpectationResult {
  std::string expression;
  bool passed = false;
  std::optional<double> lhs, rhs;  // the operands' values (absent: metric not available)
  std::string message;             // "valid_loss<5.5: valid_loss = 5.8123" (+ "failed" / "holds")
};

// metrics: name → value of what this run produced; a metric the run did not produce fails the
// expectation with a message saying so.
ExpectationResult evaluate_expectation(const Expectation& e, const std::map<std::string, double>& metrics);

}  // namespace latentmoe::train
