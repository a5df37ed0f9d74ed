// Machine-readable results of a `latentmoe train` run: `--report FILE` (JSON summary) and
// `--junit FILE` (JUnit XML: one test case for the training itself, one per expectation and one
// per golden check; what GitHub Actions, GitLab and Jenkins display). No torch headers.
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "latentmoe/train/expectations.h"
#include "latentmoe/train/golden.h"

namespace latentmoe::train {

struct RunSummary {
  std::vector<std::string> command;  // latentmoe train --config C --set ... (checkpoint./logging. overrides left out)
  std::string config_name, config_source, config_sha256;
  RunEnvironment environment;
  std::string started_at, hostname;  // ISO 8601 UTC; the machine's name
  int exit_code = 0;
  std::string status;  // "passed" | "failed" (an expectation or golden check) | "interrupted" | "error"
  std::string error;   // why training stopped early (exit code 1, 3 or 4)
  int64_t first_step = 0, final_step = 0, target_steps = 0, tokens = 0;
  std::map<std::string, double> metrics;  // expectation_metrics() that this run produced
  std::vector<std::string> checkpoints;   // committed by this run, oldest first
  std::vector<ExpectationResult> expectations;
  std::string golden_file;
  bool golden_written = false;           // --golden-write: recorded, not checked
  std::optional<GoldenReport> golden;    // set when checked
};

// "passed" / "failed" / ... and the exit code follow from the training exit code and the checks.
void finish_summary(RunSummary& s, int training_exit_code);

// Both write atomically; std::runtime_error naming the file on failure.
void write_report_json(const std::string& path, const RunSummary& s);
void write_junit_xml(const std::string& path, const RunSummary& s);

// Text with &, <, >, " and ' escaped and characters XML 1.0 forbids dropped.
std::string xml_escape(const std::string& text);

}  // namespace latentmoe::train
