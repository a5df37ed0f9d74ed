// FP8 quantization and projections: e4m3 rounding against a table of every e4m3 value, the
// quantizers (CPU kernel and ATen reference) against a scalar loop written from the rules, every
// edge case of fp8.h (zero, NaN and Inf tiles, saturation, subnormals, partial tiles, pow2
// scales), the error bound per element, and the FP8 linear/grouped linear against the formulas
// they implement, forward and backward, plus the model wiring and the statistics.
#include <ATen/ATen.h>
#include <ATen/autocast_mode.h>
#include <fmt/format.h>
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <cfloat>
#include <cmath>
#include <fstream>
#include <nlohmann/json.hpp>
#include <limits>
#include <vector>

#include "latentmoe/io/model_io.h"
#include "latentmoe/io/safetensors.h"
#include "latentmoe/model/deepseek_v3.h"
#include "latentmoe/model/mla.h"
#include "latentmoe/ops/fp8.h"
#include "latentmoe/ops/fp8_linear.h"
#include "latentmoe/ops/fp8_stats.h"
#include "latentmoe/ops/swiglu.h"
#include "model_fixtures.h"
#include "test_util.h"

namespace fp8 = latentmoe::ops::fp8;

namespace {

// Every finite e4m3fn value, decoded from its code (sign 1, exponent 4 with bias 7, mantissa 3).
std::vector<float> e4m3_values() {
  std::vector<float> out;
  for (int code = 0; code < 0x7F; ++code) {  // 0x7F is NaN
    const int exponent = code >> 3, mantissa = code & 7;
    out.push_back(exponent == 0 ? std::ldexp(mantissa / 8.0f, -6) : std::ldexp(1.0f + mantissa / 8.0f, exponent - 7));
  }
  return out;  // ascending: codes order the magnitudes
}

// Nearest e4m3 value of v (|v| <= 448), ties to the even code: by search, not by bit tricks.
float nearest_e4m3(float v) {
  static const std::vector<float> table = e4m3_values();
  const float a = std::fabs(v);
  size_t best = 0;
  for (size_t i = 1; i < table.size(); ++i) {
    const float d = std::fabs(table[i] - a), db = std::fabs(table[best] - a);
    if (d < db || (d == db && i % 2 == 0)) best = i;
  }
  return std::copysign(table[best], v);
}

// The rules of fp8.h as a scalar loop over one tile's values: {scale, dequantized values}.
std::pair<float, std::vector<float>> quantize_tile_by_hand(const std::vector<float>& tile, bool pow2) {
  float amax = 0;
  bool finite = true;
  for (float v : tile) {
    finite = finite && std::isfinite(v);
    amax = std::max(amax, std::fabs(v));
  }
  float scale = !finite ? NAN : amax == 0 ? 1.0f : std::max(amax / 448.0f, FLT_MIN);
  if (pow2 && std::isfinite(scale)) scale = std::exp2(std::ceil(std::log2(static_cast<double>(scale))));
  std::vector<float> out;
  for (float v : tile) {
    const float q = v / scale;
    out.push_back(std::isnan(q) ? NAN : nearest_e4m3(std::clamp(q, -448.0f, 448.0f)) * scale);
  }
  return {scale, out};
}

at::Tensor bytes(const at::Tensor& data) { return data.view(at::kByte); }

// Values spanning many binades, with exact zeros and a few large outliers.
at::Tensor heavy_tailed(std::vector<int64_t> shape, uint64_t seed) {
  at::manual_seed(seed);
  at::Tensor x = at::randn(shape) * at::exp(at::randn(shape) * 2.0);
  x.masked_fill_(at::rand(shape) < 0.05, 0.0);
  return x;
}

double relative_frobenius(const at::Tensor& got, const at::Tensor& want) {
  return (got.to(at::kDouble) - want.to(at::kDouble)).norm().item<double>() /
         std::max(want.to(at::kDouble).norm().item<double>(), 1e-30);
}

const fp8::Recipe kBlockwise{.scaling = fp8::Scaling::blockwise};

}  // namespace

TEST(Fp8Rounding, BitReferenceAndTorchCastEqualNearestTableValue) {
  std::vector<float> values;
  const std::vector<float> table = e4m3_values();
  for (size_t i = 0; i + 1 < table.size(); ++i) {
    const float lo = table[i], hi = table[i + 1];
    for (float f : {0.0f, 0.25f, 0.5f, 0.75f}) values.push_back(lo + (hi - lo) * f);  // exact midpoints included
    values.push_back(std::nextafter((lo + hi) / 2, 0.0f));
    values.push_back(std::nextafter((lo + hi) / 2, 1000.0f));
  }
  values.insert(values.end(), {448.0f, 0.0f, -0.0f, 0x1p-10f, 0x1p-11f, std::nextafter(0x1p-10f, 1.0f), 1e-30f});
  at::manual_seed(1);
  const at::Tensor random = (at::rand({4000}) * 2 - 1) * at::exp2(at::randint(-14, 9, {4000}).to(at::kFloat));
  for (int64_t i = 0; i < random.numel(); ++i) values.push_back(std::clamp(random[i].item<float>(), -448.0f, 448.0f));
  for (float sign : {1.0f, -1.0f}) {
    for (float v : values) {
      const float x = sign * v, want = nearest_e4m3(x);
      EXPECT_EQ(fp8::round_to_e4m3_bits(x), want) << x;
      EXPECT_EQ(at::tensor({x}).to(at::kFloat8_e4m3fn).to(at::kFloat).item<float>(), want) << x;
    }
  }
  EXPECT_TRUE(std::isnan(fp8::round_to_e4m3_bits(NAN)));
  // The quantizer's own rounding (CPU kernel and reference): rows whose amax is 448 have scale 1,
  // so each value's code must be its nearest e4m3 value.
  std::vector<float> signed_values;
  for (float v : values) signed_values.insert(signed_values.end(), {v, -v});
  const int64_t per_row = 127, rows = (static_cast<int64_t>(signed_values.size()) + per_row - 1) / per_row;
  at::Tensor x = at::zeros({rows, 128});
  for (size_t i = 0; i < signed_values.size(); ++i) {
    x[static_cast<int64_t>(i) / per_row][1 + static_cast<int64_t>(i) % per_row] = signed_values[i];
  }
  x.select(1, 0).fill_(448.0f);
  for (bool kernel : {true, false}) {
    const fp8::Quantized q = kernel ? fp8::quantize_rows(x, false) : fp8::quantize_rows_reference(x, false);
    ASSERT_TRUE(at::equal(q.scales, at::ones({rows, 1})));
    const at::Tensor got = q.data.to(at::kFloat);
    for (size_t i = 0; i < signed_values.size(); ++i) {
      ASSERT_EQ(got[static_cast<int64_t>(i) / per_row][1 + static_cast<int64_t>(i) % per_row].item<float>(),
                nearest_e4m3(signed_values[i]))
          << signed_values[i] << (kernel ? " (kernel)" : " (reference)");
    }
  }
}

TEST(Fp8Quantize, RowsAndBlocksMatchTheRulesByHandForAwkwardShapes) {
  for (at::ScalarType dtype : {at::kFloat, at::kBFloat16}) {
    for (bool pow2 : {false, true}) {
      for (int64_t k : {1, 127, 128, 129, 300}) {
        const at::Tensor x = heavy_tailed({3, k}, static_cast<uint64_t>(k)).to(dtype);
        const fp8::Quantized q = fp8::quantize_rows(x, pow2);
        const fp8::Quantized ref = fp8::quantize_rows_reference(x, pow2);
        ASSERT_EQ(q.scales.sizes(), (std::vector<int64_t>{3, (k + 127) / 128}));
        EXPECT_TRUE(at::equal(bytes(q.data), bytes(ref.data))) << "kernel vs reference, k=" << k << " " << dtype;
        EXPECT_TRUE(at::equal(q.scales, ref.scales)) << "k=" << k;
        const at::Tensor dq = fp8::dequantize_rows(q);
        const at::Tensor xf = x.to(at::kFloat);
        for (int64_t r = 0; r < 3; ++r) {
          for (int64_t t = 0; t * 128 < k; ++t) {
            const int64_t n = std::min<int64_t>(128, k - t * 128);
            std::vector<float> tile(static_cast<size_t>(n));
            for (int64_t i = 0; i < n; ++i) tile[static_cast<size_t>(i)] = xf[r][t * 128 + i].item<float>();
            const auto [scale, values] = quantize_tile_by_hand(tile, pow2);
            EXPECT_EQ(q.scales[r][t].item<float>(), scale) << "row " << r << " tile " << t << " k=" << k;
            for (int64_t i = 0; i < n; ++i) {
              ASSERT_EQ(dq[r][t * 128 + i].item<float>(), values[static_cast<size_t>(i)])
                  << "row " << r << " col " << t * 128 + i << " k=" << k << " pow2=" << pow2;
            }
          }
        }
      }
      // Blocks: a stacked [E, N, K] weight with partial blocks on both edges.
      const at::Tensor w = heavy_tailed({2, 130, 257}, 9).to(dtype);
      const fp8::Quantized qb = fp8::quantize_blocks(w, pow2), rb = fp8::quantize_blocks_reference(w, pow2);
      ASSERT_EQ(qb.scales.sizes(), (std::vector<int64_t>{2, 2, 3}));
      EXPECT_TRUE(at::equal(bytes(qb.data), bytes(rb.data)));
      EXPECT_TRUE(at::equal(qb.scales, rb.scales));
      const at::Tensor wf = w.to(at::kFloat), dqb = fp8::dequantize_blocks(qb);
      for (int64_t e = 0; e < 2; ++e) {
        for (int64_t bn = 0; bn < 2; ++bn) {
          for (int64_t bk = 0; bk < 3; ++bk) {
            const at::Tensor block = wf[e].narrow(0, bn * 128, std::min<int64_t>(128, 130 - bn * 128))
                                         .narrow(1, bk * 128, std::min<int64_t>(128, 257 - bk * 128));
            const at::Tensor flat = block.contiguous().reshape(-1);
            const auto [scale, values] =
                quantize_tile_by_hand(std::vector<float>(flat.data_ptr<float>(), flat.data_ptr<float>() + flat.numel()), pow2);
            EXPECT_EQ(qb.scales[e][bn][bk].item<float>(), scale);
            const at::Tensor got = dqb[e].narrow(0, bn * 128, block.size(0)).narrow(1, bk * 128, block.size(1));
            EXPECT_TRUE(at::equal(got.contiguous().reshape(-1), at::tensor(values))) << e << " " << bn << " " << bk;
          }
        }
      }
    }
  }
}

TEST(Fp8Quantize, EdgeCasesZeroNanInfSaturationSubnormals) {
  at::Tensor x = at::zeros({5, 256});
  x[1].normal_();
  x[1][7] = NAN;                                       // row 1, first tile: NaN
  x[2][200] = std::numeric_limits<float>::infinity();  // row 2, second tile: Inf
  x[2].narrow(0, 0, 128).fill_(3.0);                   // row 2, first tile: finite
  x[3][0] = 448.0f * 1024;                             // row 3: amax 448 * 2^10 -> scale 1024
  x[3][1] = 1024.0f * 0x1p-9f;                         // the smallest e4m3 subnormal times the scale
  x[3][2] = 1024.0f * 0x1p-11f;                        // below half of it: flushed to zero
  x[3][3] = 1024.0f * 3 * 0x1p-10f;                    // a subnormal midpoint (1.5 x 2^-9): ties to even, 2 x 2^-9
  x[4].narrow(0, 128, 128).fill_(-1e-39f);             // a subnormal fp32 tile: scale floored at FLT_MIN
  for (bool kernel : {true, false}) {
    const fp8::Quantized q = kernel ? fp8::quantize_rows(x, false) : fp8::quantize_rows_reference(x, false);
    const at::Tensor dq = fp8::dequantize_rows(q);
    EXPECT_EQ(q.scales[0][0].item<float>(), 1.0f) << "all-zero tile";
    EXPECT_TRUE(at::equal(dq[0], at::zeros({256})));
    EXPECT_TRUE(dq[1].narrow(0, 0, 128).isnan().all().item<bool>()) << "a NaN makes its whole tile NaN";
    EXPECT_FALSE(dq[1].narrow(0, 128, 128).isnan().any().item<bool>()) << "the next tile is untouched";
    EXPECT_TRUE(dq[2].narrow(0, 128, 128).isnan().all().item<bool>()) << "an Inf makes its tile NaN";
    EXPECT_TRUE(at::allclose(dq[2].narrow(0, 0, 128), at::full({128}, 3.0f), 1e-6, 0));
    EXPECT_EQ(q.scales[3][0].item<float>(), 1024.0f);
    EXPECT_EQ(dq[3][0].item<float>(), 448.0f * 1024) << "amax maps onto e4m3's largest value";
    EXPECT_EQ(dq[3][1].item<float>(), 1024.0f * 0x1p-9f) << "smallest subnormal kept";
    EXPECT_EQ(dq[3][2].item<float>(), 0.0f) << "below half the smallest subnormal: flushed";
    EXPECT_EQ(dq[3][3].item<float>(), 1024.0f * 0x1p-8f) << "subnormal tie to even";
    EXPECT_EQ(q.scales[4][1].item<float>(), FLT_MIN);
  }
  // Saturation: values beyond 448 x scale are clamped, never NaN (e4m3fn has no infinity).
  const fp8::Quantized sat{at::tensor({1000.0f, -1000.0f}).to(at::kFloat8_e4m3fn), at::ones({1})};
  EXPECT_TRUE(std::isnan(sat.data.to(at::kFloat)[0].item<float>())) << "torch's raw cast overflows to NaN...";
  const fp8::Quantized clamped = fp8::quantize_tensor(at::tensor({1000.0f, -1000.0f, 1.0f}), false);
  EXPECT_NEAR(fp8::dequantize_tensor(clamped)[1].item<float>(), -1000.0f, 1e-3) << "...the quantizer scales: none saturate";
  // pow2: every scale a power of two, at least amax / 448; no value saturates.
  const at::Tensor y = heavy_tailed({4, 384}, 3);
  const fp8::Quantized p = fp8::quantize_rows(y, true);
  const auto [mantissa, exponent] = at::frexp(p.scales);
  EXPECT_TRUE((mantissa == 0.5).all().item<bool>());
  EXPECT_TRUE((fp8::dequantize_rows(p).abs() <= at::repeat_interleave(p.scales, 128, 1) * 448).all().item<bool>());
  // Empty inputs.
  EXPECT_EQ(fp8::quantize_rows(at::zeros({0, 5}), false).scales.sizes(), (std::vector<int64_t>{0, 1}));
  EXPECT_EQ(fp8::quantize_blocks(at::zeros({0, 3, 5}), false).scales.sizes(), (std::vector<int64_t>{0, 1, 1}));
  EXPECT_EQ(fp8::quantize_rows(at::zeros({3, 0}), false).scales.sizes(), (std::vector<int64_t>{3, 0}));
  EXPECT_EQ(fp8::quantize_blocks(at::zeros({2, 0}), false).scales.sizes(), (std::vector<int64_t>{1, 0}));
  EXPECT_EQ(fp8::quantize_rows_transposed(at::zeros({0, 4}), false).data.sizes(), (std::vector<int64_t>{4, 0}));
  EXPECT_THROW(fp8::quantize_rows(at::zeros({3}, at::kLong), false), c10::Error);
}

TEST(Fp8Quantize, ErrorWithinTheE4m3BoundPerElement) {
  // Normal e4m3 range: half a unit in the last of 3 mantissa bits, 2^-4 relative; subnormal
  // range: half of 2^-9, i.e. 2^-10 x the tile's scale. Plus one fp32 rounding of data x scale.
  for (at::ScalarType dtype : {at::kFloat, at::kBFloat16}) {
    for (bool pow2 : {false, true}) {
      const at::Tensor x = heavy_tailed({64, 1000}, pow2 ? 11 : 12).to(dtype).to(at::kFloat);
      const fp8::Quantized q = fp8::quantize_rows(x, pow2);
      const at::Tensor scale = at::repeat_interleave(q.scales, 128, 1).narrow(1, 0, 1000);
      const at::Tensor bound = at::maximum(x.abs() * 0x1p-4, scale * 0x1p-10) * (1 + 1e-6);
      EXPECT_TRUE(((fp8::dequantize_rows(q) - x).abs() <= bound).all().item<bool>()) << dtype << " pow2=" << pow2;
      const fp8::Quantized b = fp8::quantize_blocks(x, pow2);
      const at::Tensor bscale = at::repeat_interleave(at::repeat_interleave(b.scales, 128, 0), 128, 1).narrow(0, 0, 64).narrow(1, 0, 1000);
      EXPECT_TRUE(((fp8::dequantize_blocks(b) - x).abs() <= at::maximum(x.abs() * 0x1p-4, bscale * 0x1p-10) * (1 + 1e-6))
                      .all()
                      .item<bool>());
    }
  }
}

TEST(Fp8Quantize, PortableLoopsGiveTheVectorBodiesBits) {
  for (at::ScalarType dtype : {at::kFloat, at::kBFloat16, at::kHalf}) {
    at::Tensor x = heavy_tailed({37, 301}, 5);
    x[3][4] = NAN;
    x[5][200] = -std::numeric_limits<float>::infinity();
    x = x.to(dtype);
    const fp8::Quantized fast = fp8::quantize_rows(x, false), fast_blocks = fp8::quantize_blocks(x, true);
    const at::Tensor fast_dq = fp8::dequantize_rows(fast);
    fp8::set_cpu_avx512(false);
    const fp8::Quantized slow = fp8::quantize_rows(x, false), slow_blocks = fp8::quantize_blocks(x, true);
    const at::Tensor slow_dq = fp8::dequantize_rows(fast);
    fp8::set_cpu_avx512(true);
    EXPECT_TRUE(at::equal(bytes(fast.data), bytes(slow.data))) << dtype;
    EXPECT_TRUE(at::equal(fast.scales.nan_to_num(-1), slow.scales.nan_to_num(-1))) << dtype;
    EXPECT_TRUE(at::equal(bytes(fast_blocks.data), bytes(slow_blocks.data))) << dtype;
    EXPECT_TRUE(at::equal(fast_dq.nan_to_num(-1), slow_dq.nan_to_num(-1))) << dtype;
    EXPECT_TRUE(at::equal(bytes(fast.data), bytes(fp8::quantize_rows_reference(x, false).data))) << dtype;
  }
}

TEST(Fp8Quantize, TransposedRowsAreTheRowsOfTheTranspose) {
  for (at::ScalarType dtype : {at::kFloat, at::kBFloat16, at::kHalf}) {
    for (auto [rows, cols] : std::vector<std::pair<int64_t, int64_t>>{{300, 70}, {1, 1}, {128, 16}, {0, 5}}) {
      at::Tensor x = heavy_tailed({rows, cols}, 4);
      if (rows > 200) x[150][3] = NAN;
      x = x.to(dtype);
      const fp8::Quantized t = fp8::quantize_rows_transposed(x, true);
      const fp8::Quantized r = fp8::quantize_rows_reference(x.t().contiguous(), true);
      EXPECT_EQ(t.data.sizes(), (std::vector<int64_t>{cols, rows}));
      EXPECT_TRUE(at::equal(bytes(t.data), bytes(r.data))) << rows << "x" << cols << " " << dtype;
      EXPECT_TRUE(at::equal(t.scales.nan_to_num(-1), r.scales.nan_to_num(-1))) << rows << "x" << cols;
    }
  }
}

namespace {
at::Tensor dq_rows(const at::Tensor& t) { return fp8::dequantize_rows(fp8::quantize_rows_reference(t, false)); }
at::Tensor dq_blocks(const at::Tensor& t) { return fp8::dequantize_blocks(fp8::quantize_blocks_reference(t, false)); }
}  // namespace

TEST(Fp8Linear, ForwardAndBackwardAreTheQuantizedGemmsOfTheRecipe) {
  at::manual_seed(21);
  const at::Tensor x = at::randn({2, 3, 130}), w = at::randn({70, 130}) * 0.1, b = at::randn({70});
  const at::Tensor dy = at::randn({2, 3, 70});
  const at::Tensor xl = x.clone().requires_grad_(), wl = w.clone().requires_grad_(), bl = b.clone().requires_grad_();
  const at::Tensor y = fp8::linear(xl, wl, bl, kBlockwise, "test");
  y.backward(dy);
  const at::Tensor x2 = x.reshape({6, 130}), dy2 = dy.reshape({6, 70});
  const at::Tensor want_y = at::mm(dq_rows(x2), dq_blocks(w).t()) + b;
  EXPECT_LE(relative_frobenius(y.reshape({6, 70}), want_y), 1e-6);
  EXPECT_LE(relative_frobenius(xl.grad().reshape({6, 130}), at::mm(dq_rows(dy2), dq_blocks(w))), 1e-6);
  EXPECT_LE(relative_frobenius(wl.grad(), at::mm(dq_rows(dy2.t().contiguous()), dq_rows(x2.t().contiguous()).t())), 1e-6);
  EXPECT_LE(relative_frobenius(bl.grad(), dy2.sum(0)), 1e-6);
  // And FP8 is close to the unquantized GEMMs (catches a transposed operand).
  EXPECT_LE(relative_frobenius(y.reshape({6, 70}), at::linear(x2, w, b)), 0.08);
  EXPECT_LE(relative_frobenius(wl.grad(), at::mm(dy2.t(), x2)), 0.08);
  // Under bf16 autocast the result is bf16, the weight gradient stays in the weight's dtype.
  const at::Tensor xb = x.to(at::kBFloat16).requires_grad_(), wb = w.clone().requires_grad_();
  {
    at::autocast::set_autocast_enabled(at::kCPU, true);
    at::autocast::set_autocast_dtype(at::kCPU, at::kBFloat16);
    const at::Tensor yb = fp8::linear(xb, wb, std::nullopt, kBlockwise, "test");
    at::autocast::set_autocast_enabled(at::kCPU, false);
    EXPECT_EQ(yb.scalar_type(), at::kBFloat16);
    yb.backward(dy.to(at::kBFloat16));
  }
  EXPECT_EQ(xb.grad().scalar_type(), at::kBFloat16);
  EXPECT_EQ(wb.grad().scalar_type(), at::kFloat);
  EXPECT_THROW(fp8::linear(x, at::randn({70, 3}), std::nullopt, kBlockwise, "bad"), c10::Error);
  // Without grad mode nothing is kept for a weight gradient; with it, a weight that needs no
  // gradient still gives the input its gradient.
  {
    const at::NoGradGuard no_grad;
    EXPECT_LE(relative_frobenius(fp8::linear(x, wl, bl, kBlockwise, "eval").reshape({6, 70}), want_y), 1e-6);
  }
  const at::Tensor xi = x.clone().requires_grad_();
  fp8::linear(xi, w, std::nullopt, kBlockwise, "frozen").backward(dy);
  EXPECT_LE(relative_frobenius(xi.grad().reshape({6, 130}), at::mm(dq_rows(dy2), dq_blocks(w))), 1e-6);
}

TEST(Fp8Linear, GroupedEqualsOneFp8LinearPerExpert) {
  at::manual_seed(22);
  const std::vector<int64_t> sizes{5, 0, 140, 1};
  const at::Tensor x = at::randn({146, 40}), w = at::randn({4, 24, 40}) * 0.2, dy = at::randn({146, 24});
  const at::Tensor xl = x.clone().requires_grad_(), wl = w.clone().requires_grad_();
  fp8::grouped_linear(xl, wl, sizes, kBlockwise, "experts").backward(dy);
  const at::Tensor yg = fp8::grouped_linear(x, w, sizes, kBlockwise, "experts");
  int64_t first = 0;
  for (size_t e = 0; e < sizes.size(); ++e) {
    const int64_t n = sizes[e];
    const at::Tensor xe = x.narrow(0, first, n).clone().requires_grad_(), we = w[e].clone().requires_grad_();
    const at::Tensor ye = fp8::linear(xe, we, std::nullopt, kBlockwise, "one");
    if (n > 0) ye.backward(dy.narrow(0, first, n));
    EXPECT_LE(relative_frobenius(yg.narrow(0, first, n), ye), 1e-6) << "expert " << e;
    if (n > 0) {
      EXPECT_LE(relative_frobenius(xl.grad().narrow(0, first, n), xe.grad()), 1e-6) << "expert " << e;
      EXPECT_LE(relative_frobenius(wl.grad()[e], we.grad()), 1e-6) << "expert " << e;
    } else {
      EXPECT_TRUE(at::equal(wl.grad()[e], at::zeros_like(we))) << "an expert without rows gets a zero gradient";
    }
    first += n;
  }
}

TEST(Fp8Linear, SwigluDifferentiatesAtItsCachedE4m3Input) {
  at::manual_seed(24);
  const at::Tensor gate_up = at::randn({33, 2 * 150}), dy = at::randn({33, 150});
  const at::Tensor l = gate_up.clone().requires_grad_();
  const at::Tensor y = fp8::swiglu_packed(l, kBlockwise);
  y.backward(dy);
  EXPECT_TRUE(at::equal(y, latentmoe::ops::swiglu_packed(gate_up))) << "the forward is exact";
  const at::Tensor at_cached = dq_rows(gate_up).requires_grad_();
  latentmoe::ops::swiglu_packed(at_cached).backward(dy);
  EXPECT_LE(relative_frobenius(l.grad(), at_cached.grad()), 1e-6);
  const at::Tensor exact = gate_up.clone().requires_grad_();
  latentmoe::ops::swiglu_packed(exact).backward(dy);
  EXPECT_GT(relative_frobenius(l.grad(), exact.grad()), 0.0);
  EXPECT_LT(relative_frobenius(l.grad(), exact.grad()), 0.1);
  // Separate gate and up.
  const at::Tensor g = gate_up.narrow(1, 0, 150).contiguous(), u = gate_up.narrow(1, 150, 150).contiguous();
  const at::Tensor gl = g.clone().requires_grad_(), ul = u.clone().requires_grad_();
  fp8::swiglu(gl, ul, kBlockwise).backward(dy);
  const at::Tensor gc = dq_rows(g).requires_grad_(), uc = dq_rows(u).requires_grad_();
  latentmoe::ops::swiglu(gc, uc).backward(dy);
  EXPECT_LE(relative_frobenius(gl.grad(), gc.grad()), 1e-6);
  EXPECT_LE(relative_frobenius(ul.grad(), uc.grad()), 1e-6);
}

TEST(Fp8Linear, StatisticsPerLayerAndTheTensorwiseControlFlushes) {
  at::manual_seed(23);
  at::Tensor x = at::randn({64, 256});
  x[0][0] = 1e6;  // one outlier: one scale per tensor flushes the rest of the tensor's small values
  const at::Tensor w = (at::randn({32, 256}) * 0.05).requires_grad_();
  fp8::set_stats_enabled(true);
  fp8::linear(x, w, std::nullopt, kBlockwise, "block").sum().backward();
  fp8::linear(x, w, std::nullopt, {.scaling = fp8::Scaling::tensorwise}, "tensor").sum().backward();
  fp8::set_stats_enabled(false);
  const auto stats = fp8::take_stats();
  for (const char* layer : {"block", "tensor"}) {
    for (const char* tensor : {"input", "weight", "grad"}) {
      for (const char* figure : {"rel_error", "saturated", "flushed", "amax"}) {
        EXPECT_TRUE(stats.count(fmt::format("fp8/{}/{}/{}", layer, tensor, figure))) << layer << tensor << figure;
      }
    }
  }
  EXPECT_EQ(stats.at("fp8/block/input/amax"), 1e6);
  EXPECT_EQ(stats.at("fp8/block/input/saturated"), 0.0);
  EXPECT_GT(stats.at("fp8/block/input/rel_error"), 0.0);
  EXPECT_LT(stats.at("fp8/block/input/rel_error"), 0.05);
  EXPECT_LT(stats.at("fp8/block/input/flushed"), 0.01);
  EXPECT_GT(stats.at("fp8/tensor/input/flushed"), 0.5) << "1e6 / 448 scale: N(0,1) values fall below e4m3's range";
  EXPECT_TRUE(fp8::take_stats().empty()) << "taken once";
  fp8::linear(x, w, std::nullopt, kBlockwise, "off").sum().backward();
  EXPECT_TRUE(fp8::take_stats().empty()) << "nothing is recorded while disabled";
}

TEST(Fp8Model, DecoderProjectionsRunInFp8AndTheHeadEmbeddingAndGatesDoNot) {
  torch::manual_seed(3);
  latentmoe::model::DeepSeekV3 model(latentmoe::testing::tiny_model_config());
  const at::Tensor ids = at::randint(61, {2, 9});
  const at::Tensor reference = model->forward(ids, false).logits;
  model->set_fp8(kBlockwise);
  EXPECT_FALSE(model->lm_head->fp8.enabled());
  for (const auto& item : model->named_modules()) {
    if (auto linear = std::dynamic_pointer_cast<latentmoe::model::LinearImpl>(item.value())) {
      const bool in_block = item.key().rfind("model.layers.", 0) == 0 || item.key().find(".block.") != std::string::npos;
      EXPECT_EQ(linear->fp8.enabled(), in_block) << item.key();
      if (in_block) EXPECT_EQ(linear->fp8_name, item.key());
    }
  }
  fp8::set_stats_enabled(true);
  const auto out = model->forward(ids, true);
  out.logits.sum().backward();
  fp8::set_stats_enabled(false);
  const auto stats = fp8::take_stats();
  EXPECT_TRUE(stats.count("fp8/model.layers.0.self_attn.q_a_proj/input/rel_error"));
  EXPECT_TRUE(stats.count("fp8/model.layers.1.mlp.experts.gate_up/grad/rel_error"));
  EXPECT_TRUE(stats.count("fp8/model.layers.1.mlp.shared_experts.down_proj/weight/amax"));
  EXPECT_FALSE(stats.count("fp8/lm_head/input/rel_error"));
  const double diff = relative_frobenius(out.logits, reference);
  EXPECT_GT(diff, 0.0);
  EXPECT_LT(diff, 0.25);
  EXPECT_TRUE(model->model->layers[0]->as<latentmoe::model::DecoderBlockImpl>()->self_attn->as<latentmoe::model::MultiHeadLatentAttentionImpl>()->o_proj->weight.grad().defined());
}

TEST(Fp8Export, ReleaseFormatRoundTripsExactlyToTheQuantization) {
  namespace io = latentmoe::io;
  const latentmoe::testing::TempDir dir;
  torch::manual_seed(4);
  const latentmoe::config::ModelConfig cfg = latentmoe::testing::tiny_model_config();
  latentmoe::model::DeepSeekV3 model(cfg);
  io::export_hf(dir.path().string(), cfg, *model, /*include_mtp=*/true, /*fp8=*/true);
  const auto config = nlohmann::json::parse(std::ifstream(dir.path() / "config.json"));
  EXPECT_EQ(config["quantization_config"]["quant_method"], "fp8");
  EXPECT_EQ(config["quantization_config"]["fmt"], "e4m3");
  EXPECT_EQ(config["quantization_config"]["weight_block_size"], nlohmann::json({128, 128}));
  const auto written = io::load_safetensors_dir(dir.path().string());
  EXPECT_EQ(written.at("model.layers.0.self_attn.q_a_proj.weight").scalar_type(), at::kFloat8_e4m3fn);
  EXPECT_EQ(written.at("model.layers.0.self_attn.q_a_proj.weight_scale_inv").scalar_type(), at::kFloat);
  EXPECT_EQ(written.at("model.layers.1.mlp.experts.3.down_proj.weight").scalar_type(), at::kFloat8_e4m3fn);
  EXPECT_EQ(written.at("model.layers.3.self_attn.o_proj.weight").scalar_type(), at::kFloat8_e4m3fn) << "MTP block";
  for (const char* bf16 : {"model.embed_tokens.weight", "lm_head.weight", "model.layers.1.mlp.gate.weight",
                           "model.layers.0.input_layernorm.weight", "model.layers.3.eh_proj.weight"}) {
    EXPECT_EQ(written.at(bf16).scalar_type(), at::kBFloat16) << bf16;
  }
  latentmoe::config::ModelConfig imported_cfg;
  latentmoe::model::DeepSeekV3 imported = io::import_hf(dir.path().string(), &imported_cfg);
  const auto originals = model->named_parameters();
  int64_t quantized = 0;
  for (const auto& p : imported->named_parameters()) {
    const at::Tensor original = originals[p.key()].detach();
    const bool fp8_weight = written.count(p.key()) && written.at(p.key()).scalar_type() == at::kFloat8_e4m3fn;
    const bool in_block = p.key().rfind("model.layers.", 0) == 0 || p.key().find(".block.") != std::string::npos;
    const bool projection = in_block && (p.key().find("_proj.weight") != std::string::npos ||
                                         p.key().find("_proj_with_mqa.weight") != std::string::npos);
    at::Tensor want = projection ? fp8::dequantize_blocks(fp8::quantize_blocks(original, false))
                                 : original.to(at::kBFloat16).to(at::kFloat);
    quantized += projection;
    EXPECT_TRUE(at::equal(p.value().detach(), want)) << p.key() << (fp8_weight ? " (fp8)" : "");
  }
  EXPECT_GT(quantized, 20);
}
