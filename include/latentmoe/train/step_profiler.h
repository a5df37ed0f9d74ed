// `latentmoe train --profile N`: after one warm-up step, N steps under libtorch's profiler; then a
// Chrome trace (open in chrome://tracing or ui.perfetto.dev) and the step time by category.
#pragma once

#include <cstdint>
#include <filesystem>
#include <memory>

#include "latentmoe/train/profile_table.h"

namespace latentmoe::train {

class StepProfiler {
 public:
  // Profiles steps (first_step, first_step + steps] counting from the step the run starts at,
  // skipping one warm-up step; writes into `dir` (trace-rank<R>.json, table-rank<R>.txt).
  StepProfiler(int64_t steps, std::filesystem::path dir, int rank);
  ~StepProfiler();

  // The scope around each step that the table's times are relative to.
  static const char* step_scope();

  // Called by the trainer around every step (`step` = the step about to run, 1-based).
  void before_step(int64_t step, int64_t first_step_of_run);
  void after_step(int64_t step);

 private:
  void finish();

  int64_t steps_;
  std::filesystem::path dir_;
  int rank_;
  int64_t start_ = -1, end_ = -1;  // first and last profiled step
  bool active_ = false, finished_ = false;
  struct Scope;
  std::unique_ptr<Scope> scope_;
};

}  // namespace latentmoe::train
