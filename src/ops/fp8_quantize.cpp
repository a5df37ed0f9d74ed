// FP8 e4m3 quantization: the reference (composite ATen ops), the CPU kernel (one pass per tile:
// amax, scale, clamp, round), dequantization and the ops' registration. The rules are in fp8.h.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <c10/util/Float8_e4m3fn.h>
#include <torch/library.h>

#include <algorithm>
#include <array>
#include <cstring>
#include <bit>
#include <cfloat>
#include <cmath>
#include <limits>

#include "latentmoe/ops/fp8.h"
#include "ops/cpu_kernel_util.h"
#include "ops/fp8_cpu.h"
#include "ops/fp8_shapes.h"
#include "ops/op_handle.h"

namespace latentmoe::ops::fp8 {

namespace {

constexpr float kMax = static_cast<float>(kE4m3Max);

void check_quantize_input(const at::Tensor& x, int64_t min_dim, const char* op) {
  TORCH_CHECK(x.dim() >= min_dim, op, ": the input needs at least ", min_dim, " dimension(s), got ", x.sizes());
  const at::ScalarType t = x.scalar_type();
  TORCH_CHECK(t == at::kFloat || t == at::kBFloat16 || t == at::kHalf, op,
              ": the input must be float32, bfloat16 or float16, got ", t);
}

// The smallest power of two >= s (s a positive normal float, or NaN which stays NaN).
float pow2_at_least(float s) {
  uint32_t bits = std::bit_cast<uint32_t>(s);
  if (std::isfinite(s) && (bits & 0x7FFFFFu) != 0) bits = (bits | 0x7FFFFFu) + 1;
  return std::bit_cast<float>(bits);
}

// One tile's scale from its amax (see fp8.h): NaN for a non-finite tile, 1 for an all-zero one.
float tile_scale(float amax, bool finite, bool pow2) {
  if (!finite) return std::numeric_limits<float>::quiet_NaN();
  if (amax == 0.0f) return 1.0f;
  const float scale = std::max(amax / kMax, FLT_MIN);
  return pow2 ? pow2_at_least(scale) : scale;
}


// Scale per tile, ATen ops: amax [..., tiles] -> scales.
at::Tensor scales_from_amax(const at::Tensor& amax, bool pow2) {
  at::Tensor scale = at::clamp_min(amax / kMax, FLT_MIN);
  scale = at::where(amax == 0, at::ones_like(scale), scale);
  if (pow2) {
    const auto [mantissa, exponent] = at::frexp(scale);  // scale = mantissa * 2^exponent, mantissa in [0.5, 1)
    scale = at::where(mantissa == 0.5, scale, at::ldexp(at::ones_like(scale), exponent));
  }
  return at::where(at::isfinite(amax), scale, at::full_like(scale, std::numeric_limits<float>::quiet_NaN()));
}

at::Tensor cast_scaled(const at::Tensor& x, const at::Tensor& scale) {
  const at::Tensor q = at::clamp(x / scale, -kMax, kMax);  // clamp keeps NaN
  // One NaN code (0x7F, positive), whatever the NaN's sign: the kernels write the same.
  return at::where(at::isnan(q), at::full_like(q, std::numeric_limits<float>::quiet_NaN()), q).to(at::kFloat8_e4m3fn);
}

// x [..., M, K] padded with zeros to [..., rows_to, cols_to] (zeros change no amax).
at::Tensor padded(const at::Tensor& x, int64_t rows_to, int64_t cols_to) {
  if (x.size(-2) == rows_to && x.size(-1) == cols_to) return x;
  std::vector<int64_t> shape = x.sizes().vec();
  shape[shape.size() - 2] = rows_to;
  shape.back() = cols_to;
  at::Tensor out = at::zeros(shape, x.options());
  out.narrow(-2, 0, x.size(-2)).narrow(-1, 0, x.size(-1)).copy_(x);
  return out;
}

std::tuple<at::Tensor, at::Tensor> quantize_rows_aten(const at::Tensor& x_in, bool pow2) {
  check_quantize_input(x_in, 1, "fp8_quantize_rows");
  const int64_t k = x_in.size(-1), kt = tile_count(k), rows = k == 0 ? 0 : x_in.numel() / k;
  const at::Tensor xp = padded(x_in.to(at::kFloat).reshape({rows, k}), rows, kt * kTile);
  const at::Tensor tiled = xp.view({xp.size(0), kt, kTile});
  const at::Tensor scale = scales_from_amax(tiled.abs().amax(-1), pow2);  // [M, kt]
  const at::Tensor data = cast_scaled(tiled, scale.unsqueeze(-1)).view({xp.size(0), kt * kTile}).narrow(1, 0, k);
  return {data.reshape(x_in.sizes()), scale.reshape(row_scale_shape(x_in.sizes()))};
}

std::tuple<at::Tensor, at::Tensor> quantize_blocks_aten(const at::Tensor& w_in, bool pow2) {
  check_quantize_input(w_in, 2, "fp8_quantize_blocks");
  const int64_t n = w_in.size(-2), k = w_in.size(-1), nt = tile_count(n), kt = tile_count(k);
  const at::Tensor w = w_in.to(at::kFloat).reshape({-1, n, k});
  const at::Tensor wp = padded(w, nt * kTile, kt * kTile);
  const at::Tensor tiled = wp.view({w.size(0), nt, kTile, kt, kTile});
  const at::Tensor scale = scales_from_amax(tiled.abs().amax({2, 4}), pow2);  // [B, nt, kt]
  const at::Tensor data = cast_scaled(tiled, scale.unsqueeze(2).unsqueeze(4))
                              .view({w.size(0), nt * kTile, kt * kTile})
                              .narrow(1, 0, n)
                              .narrow(2, 0, k);
  return {data.reshape(w_in.sizes()), scale.reshape(block_scale_shape(w_in.sizes()))};
}

std::tuple<at::Tensor, at::Tensor> quantize_rows_transposed_any(const at::Tensor& x, bool pow2) {
  TORCH_CHECK(x.dim() == 2, "fp8_quantize_rows_transposed: x must be [rows, columns], got ", x.sizes());
  static const auto op = find_op<std::tuple<at::Tensor, at::Tensor>(const at::Tensor&, bool)>("latentmoe::fp8_quantize_rows");
  return op.call(x.t().contiguous(), pow2);
}

template <typename T>
void quantize_rows_kernel(const T* src, int64_t rows, int64_t k, bool pow2, uint8_t* dst, float* scales) {
  const int64_t kt = tile_count(k);
  at::parallel_for(0, rows, ops::cpu::row_grain(k), [&](int64_t begin, int64_t end) {
    for (int64_t row = begin; row < end; ++row) {
      const T* x = src + row * k;
      float* scale = scales + row * kt;
      for (int64_t t = 0; t < kt; ++t) {
        const int64_t width = std::min(kTile, k - t * kTile);
        float amax = 0.0f;
        const bool finite = cpu::tile_amax(x + t * kTile, width, &amax);
        scale[t] = tile_scale(amax, finite, pow2);
        cpu::encode(x + t * kTile, width, scale[t], dst + row * k + t * kTile);
      }
    }
  });
}

// One task per (matrix, 128-row band): the band's rows are read in order, column tiles side by side.
template <typename T>
void quantize_blocks_kernel(const T* src, int64_t batch, int64_t n, int64_t k, bool pow2, uint8_t* dst, float* scales) {
  const int64_t nt = tile_count(n), kt = tile_count(k);
  at::parallel_for(0, batch * nt, 1, [&](int64_t begin, int64_t end) {
    std::vector<float> amax(static_cast<size_t>(kt));
    std::vector<uint8_t> finite(static_cast<size_t>(kt));
    for (int64_t band = begin; band < end; ++band) {
      const int64_t b = band / nt, r0 = band % nt * kTile, r1 = std::min(n, r0 + kTile);
      const T* w = src + b * n * k;
      amax.assign(static_cast<size_t>(kt), 0.0f);
      finite.assign(static_cast<size_t>(kt), 1);
      for (int64_t r = r0; r < r1; ++r) {
        for (int64_t t = 0; t < kt; ++t) {
          const int64_t width = std::min(kTile, k - t * kTile);
          if (!cpu::tile_amax(w + r * k + t * kTile, width, amax.data() + t)) finite[static_cast<size_t>(t)] = 0;
        }
      }
      float* scale = scales + band * kt;
      for (int64_t t = 0; t < kt; ++t) scale[t] = tile_scale(amax[static_cast<size_t>(t)], finite[static_cast<size_t>(t)] != 0, pow2);
      for (int64_t r = r0; r < r1; ++r) {
        for (int64_t t = 0; t < kt; ++t) {
          cpu::encode(w + r * k + t * kTile, std::min(kTile, k - t * kTile), scale[t], dst + b * n * k + r * k + t * kTile);
        }
      }
    }
  });
}

// data [rows, k] with `scales_per_row` scales per row, each covering 128 columns; rows r of the
// same `row_group` (1 for 1x128 tiles, 128 for blocks) share a scale row.
void dequantize_cpu(const uint8_t* data, const float* scales, int64_t rows, int64_t k, int64_t row_group, float* out) {
  const int64_t kt = tile_count(k);
  at::parallel_for(0, rows, ops::cpu::row_grain(k), [&](int64_t begin, int64_t end) {
    for (int64_t r = begin; r < end; ++r) {
      const float* scale = scales + r / row_group * kt;
      for (int64_t t = 0; t < kt; ++t) {
        cpu::decode(data + r * k + t * kTile, std::min(kTile, k - t * kTile), scale[t], out + r * k + t * kTile);
      }
    }
  });
}

template <typename Body>
void on_input_dtype(at::ScalarType t, const Body& body) {
  switch (t) {
    case at::kFloat: body(float{}); return;
    case at::kBFloat16: body(c10::BFloat16{}); return;
    case at::kHalf: body(c10::Half{}); return;
    default: TORCH_CHECK(false, "fp8 quantization: unsupported dtype ", t);
  }
}

// x [rows, k] -> x^T's 1x128 tiles. One task per (band of 128 rows, 16 columns), so that a group
// of few tokens still spreads over the threads: the block is transposed into a contiguous fp32
// buffer, then each column is one tile of x^T (scale, encode).
template <typename T>
void quantize_rows_transposed_kernel(const T* src, int64_t rows, int64_t k, bool pow2, uint8_t* dst, float* scales) {
  constexpr int64_t kColumns = 16;
  const int64_t bands = tile_count(rows), column_blocks = (k + kColumns - 1) / kColumns;
  at::parallel_for(0, bands * column_blocks, 1, [&](int64_t begin, int64_t end) {
    std::vector<float> buffer(static_cast<size_t>(kColumns * kTile));
    for (int64_t task = begin; task < end; ++task) {
      const int64_t band = task / column_blocks, c0 = task % column_blocks * kColumns;
      const int64_t r0 = band * kTile, height = std::min(kTile, rows - r0), width = std::min(kColumns, k - c0);
      for (int64_t r = 0; r < height; ++r) {
        const T* row = src + (r0 + r) * k + c0;
        for (int64_t c = 0; c < width; ++c) buffer[static_cast<size_t>(c * kTile + r)] = ops::cpu::to_float(row[c]);
      }
      for (int64_t c = 0; c < width; ++c) {
        const float* column = buffer.data() + c * kTile;
        float amax = 0.0f;
        const bool finite = cpu::tile_amax(column, height, &amax);
        const float scale = tile_scale(amax, finite, pow2);
        scales[(c0 + c) * bands + band] = scale;
        cpu::encode(column, height, scale, dst + (c0 + c) * rows + r0);
      }
    }
  });
}

std::tuple<at::Tensor, at::Tensor> quantize_rows_transposed_cpu(const at::Tensor& x_in, bool pow2) {
  TORCH_CHECK(x_in.dim() == 2, "fp8_quantize_rows_transposed: x must be [rows, columns], got ", x_in.sizes());
  check_quantize_input(x_in, 2, "fp8_quantize_rows_transposed");
  const at::Tensor x = x_in.contiguous();
  const int64_t rows = x.size(0), k = x.size(1);
  at::Tensor data = at::empty({k, rows}, x.options().dtype(at::kFloat8_e4m3fn));
  at::Tensor scales = at::empty({k, tile_count(rows)}, x.options().dtype(at::kFloat));
  if (x.numel() == 0) return {data, scales};
  on_input_dtype(x.scalar_type(), [&](auto tag) {
    using T = decltype(tag);
    quantize_rows_transposed_kernel(x.const_data_ptr<T>(), rows, k, pow2, static_cast<uint8_t*>(data.mutable_data_ptr()),
                                    scales.mutable_data_ptr<float>());
  });
  return {data, scales};
}

std::tuple<at::Tensor, at::Tensor> quantize_rows_cpu(const at::Tensor& x_in, bool pow2) {
  check_quantize_input(x_in, 1, "fp8_quantize_rows");
  const at::Tensor x = x_in.contiguous();
  const int64_t k = x.size(-1), rows = k == 0 ? 0 : x.numel() / k;
  at::Tensor data = at::empty(x.sizes(), x.options().dtype(at::kFloat8_e4m3fn));
  at::Tensor scales = at::empty(row_scale_shape(x.sizes()), x.options().dtype(at::kFloat));
  if (x.numel() == 0) return {data, scales};
  on_input_dtype(x.scalar_type(), [&](auto tag) {
    using T = decltype(tag);
    quantize_rows_kernel(x.const_data_ptr<T>(), rows, k, pow2, static_cast<uint8_t*>(data.mutable_data_ptr()),
                         scales.mutable_data_ptr<float>());
  });
  return {data, scales};
}

std::tuple<at::Tensor, at::Tensor> quantize_blocks_cpu(const at::Tensor& w_in, bool pow2) {
  check_quantize_input(w_in, 2, "fp8_quantize_blocks");
  const at::Tensor w = w_in.contiguous();
  const int64_t n = w.size(-2), k = w.size(-1), batch = n * k == 0 ? 0 : w.numel() / (n * k);
  at::Tensor data = at::empty(w.sizes(), w.options().dtype(at::kFloat8_e4m3fn));
  at::Tensor scales = at::empty(block_scale_shape(w.sizes()), w.options().dtype(at::kFloat));
  if (w.numel() == 0) return {data, scales};
  on_input_dtype(w.scalar_type(), [&](auto tag) {
    using T = decltype(tag);
    quantize_blocks_kernel(w.const_data_ptr<T>(), batch, n, k, pow2, static_cast<uint8_t*>(data.mutable_data_ptr()),
                           scales.mutable_data_ptr<float>());
  });
  return {data, scales};
}

// scales [..., tiles] repeated over their tiles' elements, cut to `size` along `dim`.
at::Tensor spread(const at::Tensor& scales, int64_t dim, int64_t size) {
  return scales.repeat_interleave(kTile, dim).narrow(dim, 0, size);
}

}  // namespace

Scaling parse_scaling(const std::string& name) {
  if (name == "none") return Scaling::none;
  if (name == "blockwise") return Scaling::blockwise;
  if (name == "tensorwise") return Scaling::tensorwise;
  TORCH_CHECK(false, "precision.fp8 must be none, blockwise or tensorwise, got '", name, "'");
}

const char* scaling_name(Scaling scaling) {
  switch (scaling) {
    case Scaling::none: return "none";
    case Scaling::blockwise: return "blockwise";
    case Scaling::tensorwise: return "tensorwise";
  }
  return "?";
}

Quantized quantize_rows(const at::Tensor& x, bool pow2_scales) {
  static const auto op = find_op<std::tuple<at::Tensor, at::Tensor>(const at::Tensor&, bool)>("latentmoe::fp8_quantize_rows");
  auto [data, scales] = op.call(x, pow2_scales);
  return {data, scales};
}

Quantized quantize_rows_transposed(const at::Tensor& x, bool pow2_scales) {
  static const auto op =
      find_op<std::tuple<at::Tensor, at::Tensor>(const at::Tensor&, bool)>("latentmoe::fp8_quantize_rows_transposed");
  auto [data, scales] = op.call(x, pow2_scales);
  return {data, scales};
}

Quantized quantize_blocks(const at::Tensor& w, bool pow2_scales) {
  static const auto op =
      find_op<std::tuple<at::Tensor, at::Tensor>(const at::Tensor&, bool)>("latentmoe::fp8_quantize_blocks");
  auto [data, scales] = op.call(w, pow2_scales);
  return {data, scales};
}

Quantized quantize_tensor(const at::Tensor& x, bool pow2_scales) {
  check_quantize_input(x, 0, "fp8 tensorwise quantization");
  const at::Tensor xf = x.to(at::kFloat);
  const at::Tensor scale = scales_from_amax(xf.numel() == 0 ? at::zeros({1}, xf.options()) : xf.abs().amax().reshape({1}),
                                            pow2_scales);
  return {cast_scaled(xf, scale), scale};
}

at::Tensor dequantize_rows(const Quantized& q, at::ScalarType dtype) {
  const int64_t k = q.data.size(-1);
  if (q.data.is_cpu() && q.data.is_contiguous() && q.scales.is_contiguous() && k > 0) {
    at::Tensor out = at::empty(q.data.sizes(), q.data.options().dtype(at::kFloat));
    dequantize_cpu(static_cast<const uint8_t*>(q.data.const_data_ptr()), q.scales.const_data_ptr<float>(),
                   q.data.numel() / k, k, 1, out.mutable_data_ptr<float>());
    return out.to(dtype);
  }
  return (q.data.to(at::kFloat) * spread(q.scales, -1, k)).to(dtype);
}

at::Tensor dequantize_blocks(const Quantized& q, at::ScalarType dtype) {
  const int64_t n = q.data.size(-2), k = q.data.size(-1);
  // W^T's operand is a transposed view of W's blocks: dequantize W, return the transposed view.
  if (q.data.dim() == 2 && !q.data.is_contiguous() && q.data.t().is_contiguous()) {
    return dequantize_blocks({q.data.t(), q.scales.t()}, dtype).t();
  }
  if (q.data.is_cpu() && q.data.is_contiguous() && q.scales.is_contiguous() && n > 0 && k > 0) {
    at::Tensor out = at::empty(q.data.sizes(), q.data.options().dtype(at::kFloat));
    const int64_t batch = q.data.numel() / (n * k);
    const uint8_t* data = static_cast<const uint8_t*>(q.data.const_data_ptr());
    for (int64_t b = 0; b < batch; ++b) {
      dequantize_cpu(data + b * n * k, q.scales.const_data_ptr<float>() + b * tile_count(n) * tile_count(k), n, k, kTile,
                     out.mutable_data_ptr<float>() + b * n * k);
    }
    return out.to(dtype);
  }
  return (q.data.to(at::kFloat) * spread(spread(q.scales, -2, n), -1, k)).to(dtype);
}

at::Tensor dequantize_tensor(const Quantized& q, at::ScalarType dtype) {
  if (q.data.dim() == 2 && !q.data.is_contiguous() && q.data.t().is_contiguous()) {
    return dequantize_tensor({q.data.t(), q.scales}, dtype).t();
  }
  if (!q.data.is_cpu() || !q.data.is_contiguous()) return (q.data.to(at::kFloat) * q.scales).to(dtype);
  at::Tensor out = at::empty(q.data.sizes(), q.data.options().dtype(at::kFloat));
  const uint8_t* data = static_cast<const uint8_t*>(q.data.const_data_ptr());
  const float scale = q.scales.item<float>();
  float* o = out.mutable_data_ptr<float>();
  at::parallel_for(0, q.data.numel(), 16384, [&](int64_t begin, int64_t end) {
    cpu::decode(data + begin, end - begin, scale, o + begin);
  });
  return out.to(dtype);
}

Quantized quantize_rows_reference(const at::Tensor& x, bool pow2_scales) {
  auto [data, scales] = quantize_rows_aten(x, pow2_scales);
  return {data, scales};
}

Quantized quantize_blocks_reference(const at::Tensor& w, bool pow2_scales) {
  auto [data, scales] = quantize_blocks_aten(w, pow2_scales);
  return {data, scales};
}

float round_to_e4m3_bits(float v) {
  if (std::isnan(v)) return v;
  const float a = std::fabs(v);
  // e4m3fn: exponent bias 7, 3 mantissa bits, normals from 2^-6, subnormals k * 2^-9.
  int exponent = a >= 0x1p-6f ? std::ilogb(a) : -6;
  const float step = std::ldexp(1.0f, exponent - 3);  // spacing of representable values there
  const float units = a / step;                      // exact: a power-of-two division
  float rounded = std::floor(units);
  const float rest = units - rounded;
  if (rest > 0.5f || (rest == 0.5f && std::fmod(rounded, 2.0f) != 0.0f)) rounded += 1.0f;
  const float out = std::min(rounded * step, kMax);
  return std::copysign(out, v);
}

TORCH_LIBRARY_IMPL(latentmoe, CPU, m) {
  m.impl("fp8_quantize_rows", &quantize_rows_cpu);
  m.impl("fp8_quantize_blocks", &quantize_blocks_cpu);
  m.impl("fp8_quantize_rows_transposed", &quantize_rows_transposed_cpu);
}

TORCH_LIBRARY_IMPL(latentmoe, CompositeExplicitAutograd, m) {
  m.impl("fp8_quantize_rows", &quantize_rows_aten);
  m.impl("fp8_quantize_blocks", &quantize_blocks_aten);
  m.impl("fp8_quantize_rows_transposed", &quantize_rows_transposed_any);
}

}  // namespace latentmoe::ops::fp8
