// LR schedules in closed form (tests compare them with the formulas at chosen steps).
#include "latentmoe/train/schedule.h"

#include <algorithm>
#include <cmath>

namespace latentmoe::train {

LrSchedule::LrSchedule(const config::ScheduleConfig& schedule, double peak_lr, const BatchSchedule& batches)
    : s_(schedule),
      peak_(peak_lr),
      total_steps_(batches.total_steps()),
      total_tokens_(batches.total_tokens()),
      warmup_end_tokens_(batches.tokens_after(schedule.warmup)) {}

LrSchedule::LrSchedule(const config::ScheduleConfig& schedule, double peak_lr, int64_t total_steps, int64_t tokens_per_step)
    : s_(schedule),
      peak_(peak_lr),
      total_steps_(total_steps),
      total_tokens_(total_steps * tokens_per_step),
      warmup_end_tokens_(schedule.warmup * tokens_per_step) {}

double LrSchedule::lr(int64_t step, int64_t tokens) const {
  if (step < s_.warmup) return peak_ * static_cast<double>(step + 1) / static_cast<double>(s_.warmup);
  if (s_.type == "constant") return peak_;
  const bool by_tokens = s_.unit == "tokens";
  const double now = by_tokens ? static_cast<double>(tokens) : static_cast<double>(step);
  const double end = static_cast<double>(by_tokens ? total_tokens_ : total_steps_);
  double start = static_cast<double>(by_tokens ? warmup_end_tokens_ : s_.warmup);
  if (s_.type == "multiphase" && s_.decay_start > 0) start = static_cast<double>(s_.decay_start);
  const double length = s_.decay_length > 0 ? static_cast<double>(s_.decay_length) : std::max(end - start, 1.0);
  if (s_.type == "multiphase") {
    for (size_t i = s_.stepdown_at.size(); i-- > 0;) {
      if (now >= static_cast<double>(s_.stepdown_at[i])) return s_.stepdown_lr[i];
    }
  }
  if (now < start) return peak_;  // multiphase: the constant phase
  const double progress = std::clamp((now - start) / length, 0.0, 1.0);
  return s_.min_lr + 0.5 * (peak_ - s_.min_lr) * (1.0 + std::cos(M_PI * progress));
}

double mtp_loss_weight_at(const config::Config& cfg, int64_t tokens) {
  const auto& t = cfg.train;
  if (cfg.model.num_nextn_predict_layers == 0) return 0.0;
  return t.mtp_loss_weight_switch_tokens > 0 && tokens >= t.mtp_loss_weight_switch_tokens ? t.mtp_loss_weight_final
                                                                                          : t.mtp_loss_weight;
}

double bias_update_speed_at(const config::TrainConfig& t, int64_t tokens) {
  return t.bias_update_freeze_tokens > 0 && tokens >= t.bias_update_freeze_tokens ? 0.0 : t.bias_update_speed;
}

}  // namespace latentmoe::train
