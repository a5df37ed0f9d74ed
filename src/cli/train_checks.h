// What `latentmoe train` checks and reports for CI: --golden (check or --golden-write), --expect,
// --report (JSON) and --junit (XML). Everything is parsed and validated before training starts,
// so a malformed expression or golden file exits 2 before any heavy work.
#pragma once

#include <CLI/CLI.hpp>

#include <chrono>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "commands.h"
#include "latentmoe/train/expectations.h"
#include "latentmoe/train/golden.h"
#include "latentmoe/train/run_report.h"

namespace latentmoe::train {
class Trainer;
}

namespace latentmoe::cli {

struct TrainCheckArgs {
  std::string golden_file, golden_mode, report_file, junit_file;  // golden_mode "": auto
  bool golden_write = false;
  std::vector<std::string> expect;
  void add_to(CLI::App& command);
  bool any() const { return !golden_file.empty() || !report_file.empty() || !junit_file.empty() || !expect.empty(); }
};

class TrainChecks {
 public:
  // Throws ConfigError for a malformed --expect, --golden-mode, an unreadable golden file, or a
  // metric the config cannot produce (valid_loss without a validation split).
  TrainChecks(const TrainCheckArgs& args, const ConfigArgs& config_args, const config::Config& cfg, int world_size);
  // After a resume: a golden run starts at step 1 (ConfigError otherwise).
  void check_fresh_start(int64_t resumed_step) const;
  // Whether an expectation names the unigram entropy (reading the corpus costs a second or more).
  bool needs_unigram_entropy() const;
  // After training (rank 0): evaluates, writes what was asked for, logs each outcome; returns the
  // exit code (training's own if it failed, else 0 or kExitCheckFailed).
  int finish(const train::Trainer& trainer, int training_exit, const std::string& error,
             std::optional<double> valid_loss, std::optional<double> unigram_entropy);

 private:
  TrainCheckArgs args_;
  const config::Config& cfg_;
  std::vector<train::Expectation> expectations_;
  train::GoldenMode golden_mode_ = train::GoldenMode::automatic;
  std::optional<train::GoldenRecord> golden_;  // the file to check against
  train::RunSummary summary_;
  std::chrono::steady_clock::time_point start_;
};

}  // namespace latentmoe::cli
