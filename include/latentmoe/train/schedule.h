// Learning-rate schedules: constant (after warmup), warmup + cosine to min_lr, and DeepSeek's
// multi-phase schedule (warmup, constant, cosine decay, step-downs). Warmup is in steps; the
// other boundaries are in schedule.unit (steps or tokens). Pure functions of (step, tokens).
#pragma once

#include <cstdint>

#include "latentmoe/config/config.h"

namespace latentmoe::train {

class LrSchedule {
 public:
  LrSchedule(const config::ScheduleConfig& schedule, double peak_lr, int64_t total_steps, int64_t tokens_per_step);
  // LR for optimizer step `step` (0-based), when `tokens` tokens have been trained on before it.
  double lr(int64_t step, int64_t tokens) const;

 private:
  config::ScheduleConfig s_;
  double peak_;
  int64_t total_steps_, tokens_per_step_;
};

}  // namespace latentmoe::train
