// Shapes of FP8 scales, shared by the CPU, CUDA and reference quantizers.
#pragma once

#include <c10/util/ArrayRef.h>

#include <cstdint>
#include <vector>

#include "latentmoe/ops/fp8.h"

namespace latentmoe::ops::fp8 {

inline int64_t tile_count(int64_t n) { return (n + kTile - 1) / kTile; }

// x [..., K] -> [..., ceil(K/128)].
inline std::vector<int64_t> row_scale_shape(c10::IntArrayRef sizes) {
  std::vector<int64_t> shape = sizes.vec();
  shape.back() = tile_count(shape.back());
  return shape;
}

// w [..., N, K] -> [..., ceil(N/128), ceil(K/128)].
inline std::vector<int64_t> block_scale_shape(c10::IntArrayRef sizes) {
  std::vector<int64_t> shape = row_scale_shape(sizes);
  shape[shape.size() - 2] = tile_count(shape[shape.size() - 2]);
  return shape;
}

}  // namespace latentmoe::ops::fp8
