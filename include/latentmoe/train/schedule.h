// Learning-rate schedules: constant (after warmup), warmup + cosine to min_lr, and DeepSeek's
// multi-phase schedule (warmup, constant, cosine decay, step-downs). Warmup is in steps; the
// other boundaries are in schedule.unit (steps or tokens). Pure functions of (step, tokens).
// No torch headers.
#pragma once

#include <cstdint>

#include "latentmoe/config/config.h"
#include "latentmoe/train/batch_schedule.h"

namespace latentmoe::train {

class LrSchedule {
 public:
  // The run's length and its tokens (after warmup and in all) come from `batches`.
  LrSchedule(const config::ScheduleConfig& schedule, double peak_lr, const BatchSchedule& batches);
  // A constant batch of tokens_per_step tokens.
  LrSchedule(const config::ScheduleConfig& schedule, double peak_lr, int64_t total_steps, int64_t tokens_per_step);
  // LR for optimizer step `step` (0-based), when `tokens` tokens have been trained on before it.
  double lr(int64_t step, int64_t tokens) const;

 private:
  config::ScheduleConfig s_;
  double peak_;
  int64_t total_steps_, total_tokens_, warmup_end_tokens_;
};

// The MTP weight lambda (0 without MTP modules) and the balancing speed gamma (0 once frozen) in
// effect for the step that starts after `tokens` consumed tokens: the trainer applies them, the
// timeline plots them.
double mtp_loss_weight_at(const config::Config& cfg, int64_t tokens);
double bias_update_speed_at(const config::TrainConfig& train, int64_t tokens);

}  // namespace latentmoe::train
