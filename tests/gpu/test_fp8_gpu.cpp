// FP8 on CUDA against the CPU: the quantization kernels bit for bit (rows, transposed rows,
// blocks; fp32/bf16; partial tiles, zero and NaN tiles), and the FP8 projections (sm_90: torch's
// blockwise-scaled cuBLASLt GEMM) against the CPU emulation within the accumulation-order bound.
// Skips cleanly without a GPU.
#include <ATen/ATen.h>
#include <gtest/gtest.h>

#ifdef LATENTMOE_WITH_CUDA
#include <ATen/cuda/CUDAContext.h>
#endif

#include "latentmoe/ops/fp8.h"
#include "latentmoe/ops/fp8_linear.h"

namespace fp8 = latentmoe::ops::fp8;

namespace {
at::Tensor awkward(std::vector<int64_t> shape, uint64_t seed) {
  at::manual_seed(seed);
  at::Tensor x = at::randn(shape) * at::exp(at::randn(shape) * 2.0);
  x.view(-1)[0] = NAN;  // the first tile NaN
  x.view(-1).narrow(0, x.numel() / 2, std::min<int64_t>(x.numel() / 2, 200)).zero_();
  return x;
}
bool same_bytes(const at::Tensor& a, const at::Tensor& b) { return at::equal(a.cpu().view(at::kByte), b.view(at::kByte)); }
bool same_scales(const at::Tensor& a, const at::Tensor& b) {
  return at::equal(a.cpu().nan_to_num(-1), b.nan_to_num(-1));
}
}  // namespace

TEST(Fp8Gpu, QuantizationKernelsEqualTheCpuBitForBit) {
  if (!at::hasCUDA()) GTEST_SKIP() << "no CUDA device";
  for (at::ScalarType dtype : {at::kFloat, at::kBFloat16}) {
    for (bool pow2 : {false, true}) {
      for (auto [rows, k] : std::vector<std::pair<int64_t, int64_t>>{{1, 1}, {3, 127}, {257, 129}, {1000, 384}}) {
        const at::Tensor x = awkward({rows, k}, static_cast<uint64_t>(rows + k)).to(dtype);
        const fp8::Quantized c = fp8::quantize_rows(x, pow2), g = fp8::quantize_rows(x.cuda(), pow2);
        EXPECT_TRUE(same_bytes(g.data, c.data) && same_scales(g.scales, c.scales)) << rows << "x" << k << " " << dtype;
        const fp8::Quantized ct = fp8::quantize_rows_transposed(x, pow2), gt = fp8::quantize_rows_transposed(x.cuda(), pow2);
        EXPECT_TRUE(same_bytes(gt.data, ct.data) && same_scales(gt.scales, ct.scales)) << "transposed " << rows << "x" << k;
      }
      const at::Tensor w = awkward({3, 130, 257}, 7).to(dtype);
      const fp8::Quantized c = fp8::quantize_blocks(w, pow2), g = fp8::quantize_blocks(w.cuda(), pow2);
      EXPECT_TRUE(same_bytes(g.data, c.data) && same_scales(g.scales, c.scales)) << "blocks " << dtype;
    }
  }
}

TEST(Fp8Gpu, ProjectionsEqualTheCpuEmulation) {
  if (!at::hasCUDA()) GTEST_SKIP() << "no CUDA device";
  const fp8::Recipe recipe{.scaling = fp8::Scaling::blockwise};
  at::manual_seed(3);
  const int64_t calls_before = fp8::cuda_scaled_mm_calls();
  // Whole 128-tiles (the cuBLASLt path on sm_90) and ragged ones (the emulation on any GPU).
  for (auto [m, k, n] : std::vector<std::tuple<int64_t, int64_t, int64_t>>{{256, 512, 384}, {77, 130, 70}}) {
    const at::Tensor x = at::randn({m, k}), w = at::randn({n, k}) * 0.05, dy = at::randn({m, n});
    at::Tensor grads[2][2];
    at::Tensor outs[2];
    for (int cuda = 0; cuda < 2; ++cuda) {
      const auto dev = cuda ? at::Device(at::kCUDA) : at::Device(at::kCPU);
      const at::Tensor xl = x.to(dev).requires_grad_(), wl = w.to(dev).requires_grad_();
      outs[cuda] = fp8::linear(xl, wl, std::nullopt, recipe, "gpu");
      outs[cuda].backward(dy.to(dev));
      grads[cuda][0] = xl.grad().cpu();
      grads[cuda][1] = wl.grad().cpu();
    }
    // Same quantized operands; only the accumulation order differs (fp32 sums of K products).
    const auto close = [](const at::Tensor& a, const at::Tensor& b) {
      return ((a.cpu() - b).abs().max().item<double>() / std::max(b.abs().max().item<double>(), 1e-30)) < 1e-4;
    };
    EXPECT_TRUE(close(outs[1], outs[0])) << m << "x" << k << "x" << n;
    EXPECT_TRUE(close(grads[1][0], grads[0][0])) << "dx";
    EXPECT_TRUE(close(grads[1][1], grads[0][1])) << "dw";
  }
#ifdef LATENTMOE_WITH_CUDA
  // On Hopper the whole-tile shape must have run on cuBLASLt's blockwise path, not the fallback.
  if (at::cuda::getCurrentDeviceProperties()->major == 9) {
    EXPECT_GE(fp8::cuda_scaled_mm_calls() - calls_before, 3) << "forward, dgrad and wgrad of 256x512x384";
  }
#endif
  RecordProperty("cuda_scaled_mm_calls", std::to_string(fp8::cuda_scaled_mm_calls() - calls_before));
}
