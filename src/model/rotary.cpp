// YaRN frequencies computed in fp32 exactly as HF's _compute_yarn_parameters (truncated correction
// range, linear ramp over rope_dim/2), so imported checkpoints see identical angles.
#include "latentmoe/model/rotary.h"

#include <ATen/record_function.h>

#include "latentmoe/ops/rotary.h"

#include <cmath>

namespace latentmoe::model {

double yarn_mscale(double scale, double m) { return scale <= 1.0 ? 1.0 : 0.1 * m * std::log(scale) + 1.0; }

namespace {
double correction_dim(double rotations, int64_t dim, double base, int64_t max_positions) {
  return (static_cast<double>(dim) * std::log(static_cast<double>(max_positions) / (rotations * 2.0 * M_PI))) /
         (2.0 * std::log(base));
}
}  // namespace

RotaryEmbedding::RotaryEmbedding(const config::ModelConfig& cfg, int64_t dim) : interleaved_(cfg.rope_interleave) {
  const double base = cfg.rope_theta;
  const torch::Tensor exponents = torch::arange(0, dim, 2, torch::kFloat) / static_cast<float>(dim);
  const torch::Tensor pos_freqs = torch::pow(torch::tensor(static_cast<float>(base)), exponents);
  const torch::Tensor extrapolated = 1.0 / pos_freqs;
  const auto& y = cfg.rope_scaling;
  if (y.type != "yarn") {
    inv_freq_ = extrapolated;
    return;
  }
  const torch::Tensor interpolated = 1.0 / (static_cast<float>(y.factor) * pos_freqs);
  double low = std::floor(correction_dim(y.beta_fast, dim, base, y.original_max_position_embeddings));
  double high = std::ceil(correction_dim(y.beta_slow, dim, base, y.original_max_position_embeddings));
  low = std::max(low, 0.0);
  high = std::min(high, static_cast<double>(dim - 1));
  if (low == high) high += 0.001;  // avoid a zero-width ramp
  const torch::Tensor ramp =
      torch::clamp((torch::arange(dim / 2, torch::kFloat) - static_cast<float>(low)) / static_cast<float>(high - low), 0, 1);
  const torch::Tensor extrapolation_weight = 1 - ramp;
  inv_freq_ = interpolated * (1 - extrapolation_weight) + extrapolated * extrapolation_weight;
  attention_factor_ = (y.mscale != 0 && y.mscale_all_dim != 0)
                          ? yarn_mscale(y.factor, y.mscale) / yarn_mscale(y.factor, y.mscale_all_dim)
                          : yarn_mscale(y.factor, 1.0);
  if (y.mscale_all_dim != 0) {
    const double m = yarn_mscale(y.factor, y.mscale_all_dim);
    softmax_scale_multiplier_ = m * m;
  }
}

std::pair<torch::Tensor, torch::Tensor> RotaryEmbedding::cos_sin(const torch::Tensor& positions) const {
  RECORD_FUNCTION("latentmoe.rotary.cos_sin", c10::ArrayRef<const c10::IValue>{});
  const torch::Tensor freqs = positions.to(torch::kFloat).unsqueeze(-1) * inv_freq_.to(positions.device());
  torch::Tensor cos = freqs.cos(), sin = freqs.sin();
  if (attention_factor_ != 1.0) {
    cos = cos * attention_factor_;
    sin = sin * attention_factor_;
  }
  return {cos, sin};
}

torch::Tensor RotaryEmbedding::apply(const torch::Tensor& x, const torch::Tensor& cos, const torch::Tensor& sin) const {
  RECORD_FUNCTION("latentmoe.rotary", c10::ArrayRef<const c10::IValue>{});
  const bool per_head = x.dim() == 4;  // queries [b,h,s,rope]; the shared key is [b,s,rope]
  const auto batched = [](const torch::Tensor& t) { return t.dim() == 2 ? t.unsqueeze(0) : t; };
  const torch::Tensor out = ops::rotary_embedding(per_head ? x : x.unsqueeze(1), batched(cos), batched(sin), interleaved_);
  return per_head ? out : out.squeeze(1);
}

}  // namespace latentmoe::model
