// Per-layer FP8 observability (logged every logging.interval): for each FP8 projection and each
// quantized tensor (input, weight, grad): the relative quantization error ||dq(q(t)) - t|| / ||t||,
// the fraction of values saturated (|t| / scale above 464, the midpoint past e4m3's largest value
// 448, so that rounding without the clamp would overflow) and flushed to zero (t != 0 quantized to 0), and the amax. Collected only while enabled (the trainer
// enables it for the steps it logs), summed over every call in those steps (micro-batches, MTP).
#pragma once

#include <ATen/core/Tensor.h>

#include <map>
#include <string>

namespace latentmoe::ops::fp8 {

void set_stats_enabled(bool enabled);
bool stats_enabled();

// original: the tensor before quantization; dequantized: dq(q(original)), same shape; scales
// spread to the same shape.
void record_stats(const std::string& layer, const char* tensor, const at::Tensor& original,
                  const at::Tensor& dequantized, const at::Tensor& element_scales);

// "fp8/<layer>/<tensor>/{rel_error,saturated,flushed,amax}" since the last call; clears them.
std::map<std::string, double> take_stats();

}  // namespace latentmoe::ops::fp8
