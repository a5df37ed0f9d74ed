// Rotary position embedding over the rotary dims an attention type asks for,
// with YaRN context extension: frequency interpolation blended over the beta_fast/beta_slow
// correction range, an attention factor on cos/sin, and the mscale^2 multiplier on the softmax
// scale. Matches HF transformers' "yarn".
#pragma once

#include <torch/types.h>

#include "latentmoe/config/config.h"

namespace latentmoe::model {

class RotaryEmbedding {
 public:
  RotaryEmbedding() = default;
  // dim: the rotated width of a head (the attention type says which; MLA: qk_rope_head_dim), with
  // the model section's rope_theta, rope_interleave and rope_scaling.
  RotaryEmbedding(const config::ModelConfig& cfg, int64_t dim);

  // cos/sin for positions [...]: each [..., rope_dim / 2], fp32, on positions' device.
  std::pair<torch::Tensor, torch::Tensor> cos_sin(const torch::Tensor& positions) const;

  // Rotates queries x [b, h, s, rope_dim] or keys [b, s, rope_dim] by cos/sin [s or b x s,
  // rope_dim/2] (one pass: latentmoe::rotary_embedding). Interleaved pairs (x0,x1),(x2,x3)... come out as [rotated evens | rotated odds], the layout
  // HF uses: queries and keys get the same permutation, so attention scores are unchanged.
  torch::Tensor apply(const torch::Tensor& x, const torch::Tensor& cos, const torch::Tensor& sin) const;

  // Multiplier on the attention softmax scale (mscale(factor, mscale_all_dim)^2 under YaRN).
  double softmax_scale_multiplier() const { return softmax_scale_multiplier_; }
  const torch::Tensor& inv_freq() const { return inv_freq_; }

 private:
  torch::Tensor inv_freq_;  // [rope_dim / 2], fp32, CPU
  double attention_factor_ = 1.0;
  double softmax_scale_multiplier_ = 1.0;
  bool interleaved_ = true;
};

// YaRN's magnitude correction 0.1 * m * ln(scale) + 1 (1 when scale <= 1).
double yarn_mscale(double scale, double m);

}  // namespace latentmoe::model
