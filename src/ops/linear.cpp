// The projection policy: at::linear, or under autocast on a CPU without native low-precision
// GEMMs an fp32 GEMM on operands rounded to the autocast dtype.
#include "latentmoe/ops/linear.h"

#include <ATen/ATen.h>
#include <ATen/autocast_mode.h>
#include <c10/core/impl/LocalDispatchKeySet.h>

#include <atomic>
#include <chrono>
#include <map>
#include <mutex>

namespace latentmoe::ops {

namespace {
std::atomic<LowPrecisionGemm> g_mode{LowPrecisionGemm::automatic};
std::mutex g_mutex;
std::map<at::ScalarType, GemmChoice> g_measured;

double gflops_of(at::ScalarType dtype) {
  // A projection-like shape: large enough to reach the steady GEMM rate, small enough that the
  // slow path costs ~20 ms once per process.
  constexpr int64_t m = 128, k = 256, n = 256;
  const c10::impl::ExcludeDispatchKeyGuard no_autocast(
      c10::DispatchKeySet({c10::DispatchKey::AutocastCPU, c10::DispatchKey::AutocastCUDA}));
  const at::NoGradGuard no_grad;
  const at::Tensor a = at::randn({m, k}).to(dtype), b = at::randn({n, k}).to(dtype);
  at::linear(a, b);  // warm-up: first-call setup of the GEMM library
  double best = 1e30;
  for (int rep = 0; rep < 3; ++rep) {
    const auto start = std::chrono::steady_clock::now();
    at::linear(a, b);
    best = std::min(best, std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count());
  }
  return 2.0 * m * k * n / std::max(best, 1e-9) / 1e9;
}
}  // namespace

void set_cpu_low_precision_gemm(LowPrecisionGemm mode) { g_mode = mode; }

LowPrecisionGemm parse_low_precision_gemm(const std::string& name) {
  if (name == "auto") return LowPrecisionGemm::automatic;
  if (name == "native") return LowPrecisionGemm::native;
  if (name == "emulated") return LowPrecisionGemm::emulated;
  TORCH_CHECK(false, "precision.cpu_low_precision_gemm must be auto, native or emulated, got '", name, "'");
}

GemmChoice cpu_low_precision_gemm(at::ScalarType dtype) {
  switch (g_mode.load()) {
    case LowPrecisionGemm::native: return {.emulated = false};
    case LowPrecisionGemm::emulated: return {.emulated = true};
    case LowPrecisionGemm::automatic: break;
  }
  const std::lock_guard<std::mutex> lock(g_mutex);
  if (const auto it = g_measured.find(dtype); it != g_measured.end()) return it->second;
  GemmChoice choice;
  choice.native_gflops = gflops_of(dtype);
  choice.fp32_gflops = gflops_of(at::kFloat);
  choice.emulated = choice.native_gflops * 2.0 < choice.fp32_gflops;
  g_measured[dtype] = choice;
  return choice;
}

at::Tensor rounded_to(const at::Tensor& t, at::ScalarType dtype) { return t.to(dtype).to(at::kFloat); }

std::optional<at::ScalarType> emulated_autocast_dtype(c10::DeviceType device) {
  if (device != c10::DeviceType::CPU || !at::autocast::is_autocast_enabled(device)) return std::nullopt;
  const at::ScalarType dtype = at::autocast::get_autocast_dtype(device);
  if (!cpu_low_precision_gemm(dtype).emulated) return std::nullopt;
  return dtype;
}

at::Tensor linear(const at::Tensor& x, const at::Tensor& weight, const std::optional<at::Tensor>& bias) {
  const std::optional<at::ScalarType> emulated = emulated_autocast_dtype(x.device().type());
  if (!emulated) return at::linear(x, weight, bias);  // autocast (if on) casts, the GEMM runs in its dtype
  const at::ScalarType dtype = *emulated;
  const c10::impl::ExcludeDispatchKeyGuard no_autocast(c10::DispatchKeySet(c10::DispatchKey::AutocastCPU));
  // Round to the compute dtype as autocast would, multiply exactly in fp32, round the result: the
  // casts are differentiable, so the gradients get the same rounding at the same places.
  std::optional<at::Tensor> b;
  if (bias && bias->defined()) b = rounded_to(*bias, dtype);
  return at::linear(rounded_to(x, dtype), rounded_to(weight, dtype), b).to(dtype);
}

}  // namespace latentmoe::ops
