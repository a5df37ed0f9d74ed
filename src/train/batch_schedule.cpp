// The batch ramp's constant-batch segments, walked once; every query is a lookup in them.
#include "latentmoe/train/batch_schedule.h"

#include <fmt/format.h>

#include <algorithm>

#include "latentmoe/util/error.h"

namespace latentmoe::train {

namespace {
int64_t ceil_div(int64_t a, int64_t b) { return a <= 0 ? 0 : (a + b - 1) / b; }
}  // namespace

BatchSchedule::BatchSchedule(const config::TrainConfig& t) : seq_len_(t.seq_len), global_(t.global_batch_size) {
  if (seq_len_ <= 0 || global_ <= 0) {
    throw ConfigError(fmt::format("train.seq_len ({}) and train.global_batch_size ({}) must be > 0", seq_len_, global_));
  }
  const config::BatchRampConfig& ramp = t.batch_ramp;
  if (ramp.start > 0) {
    if (ramp.start >= global_ || ramp.increment <= 0 || ramp.tokens <= 0) {
      throw ConfigError(fmt::format("train.batch_ramp: start ({}) must be < train.global_batch_size ({}), increment ({}) "
                                    "and tokens ({}) > 0", ramp.start, global_, ramp.increment, ramp.tokens));
    }
    start_ = ramp.start;
    increment_ = ramp.increment;
    ramp_tokens_ = ramp.tokens;
    increments_ = ceil_div(global_ - start_, increment_);
    int64_t step = 0, tokens = 0;
    for (int64_t k = 0; k < increments_; ++k) {
      // Segment k holds the tokens T with floor(T * n / R) == k: [ceil(k R / n), ceil((k+1) R / n)).
      const auto bound = [&](int64_t i) {
        const __int128 scaled = static_cast<__int128>(i) * ramp_tokens_;
        return static_cast<int64_t>((scaled + increments_ - 1) / increments_);
      };
      const int64_t batch = start_ + k * increment_;
      const int64_t steps = ceil_div(bound(k + 1) - tokens, batch * seq_len_);
      if (steps == 0) continue;  // the previous segment's last step already went past this one
      segments_.push_back({step, tokens, batch});
      step += steps;
      tokens += steps * batch * seq_len_;
    }
    segments_.push_back({step, tokens, global_});
  } else {
    segments_.push_back({0, 0, global_});
  }
  sized_by_tokens_ = t.tokens > 0;
  total_steps_ = sized_by_tokens_ ? steps_to_reach(t.tokens) : t.steps;
  total_tokens_ = tokens_after(total_steps_);
}

int64_t BatchSchedule::global_batch(int64_t tokens_seen) const {
  if (ramp_tokens_ == 0 || tokens_seen >= ramp_tokens_) return global_;
  const __int128 k = static_cast<__int128>(std::max<int64_t>(tokens_seen, 0)) * increments_ / ramp_tokens_;
  return std::min(global_, start_ + static_cast<int64_t>(k) * increment_);
}

const BatchSchedule::Segment& BatchSchedule::segment_at_step(int64_t step) const {
  const auto after = std::upper_bound(segments_.begin(), segments_.end(), step,
                                      [](int64_t s, const Segment& seg) { return s < seg.first_step; });
  return *(after - 1);
}

int64_t BatchSchedule::tokens_after(int64_t steps) const {
  if (steps <= 0) return 0;
  const Segment& s = segment_at_step(steps);
  return s.first_tokens + (steps - s.first_step) * s.batch * seq_len_;
}

int64_t BatchSchedule::steps_to_reach(int64_t tokens) const {
  if (tokens <= 0) return 0;
  size_t i = 0;
  while (i + 1 < segments_.size() && segments_[i + 1].first_tokens < tokens) ++i;
  const Segment& s = segments_[i];
  return s.first_step + ceil_div(tokens - s.first_tokens, s.batch * seq_len_);
}

std::vector<int64_t> BatchSchedule::batch_values() const {
  std::vector<int64_t> values;
  for (const Segment& s : segments_) values.push_back(s.batch);
  return values;
}

}  // namespace latentmoe::train
