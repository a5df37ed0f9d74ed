// FP8 statistics: sums per (layer, tensor) while enabled, turned into ratios when taken.
#include "latentmoe/ops/fp8_stats.h"

#include <ATen/ATen.h>

#include <algorithm>
#include <atomic>
#include <mutex>

#include "latentmoe/ops/fp8.h"

namespace latentmoe::ops::fp8 {

namespace {
struct Sums {
  double error_sq = 0, norm_sq = 0, amax = 0;
  int64_t saturated = 0, flushed = 0, count = 0;
};
std::atomic<bool> g_enabled{false};
std::mutex g_mutex;
std::map<std::pair<std::string, std::string>, Sums> g_sums;
}  // namespace

void set_stats_enabled(bool enabled) { g_enabled = enabled; }
bool stats_enabled() { return g_enabled.load(); }

void record_stats(const std::string& layer, const char* tensor, const at::Tensor& original,
                  const at::Tensor& dequantized, const at::Tensor& element_scales) {
  const at::NoGradGuard no_grad;
  const at::Tensor x = original.to(at::kFloat).reshape(-1), dq = dequantized.reshape(-1);
  const at::Tensor limit = element_scales.reshape(-1) * 464.0f;  // fp8_stats.h: where rounding would overflow
  const at::Tensor ax = x.abs();
  // One read of the scalars for all six figures (this runs on logged steps only).
  const at::Tensor figures = at::stack({(dq - x).pow(2).sum().to(at::kDouble), x.pow(2).sum().to(at::kDouble),
                                        x.numel() ? ax.amax().to(at::kDouble) : at::zeros({}, at::kDouble),
                                        (ax > limit).sum().to(at::kDouble),
                                        ((x != 0) & (dq == 0)).sum().to(at::kDouble)})
                                 .cpu();
  const double* f = figures.const_data_ptr<double>();
  const std::lock_guard<std::mutex> lock(g_mutex);
  Sums& s = g_sums[{layer, tensor}];
  s.error_sq += f[0];
  s.norm_sq += f[1];
  s.amax = std::max(s.amax, f[2]);
  s.saturated += static_cast<int64_t>(f[3]);
  s.flushed += static_cast<int64_t>(f[4]);
  s.count += x.numel();
}

std::map<std::string, double> take_stats() {
  const std::lock_guard<std::mutex> lock(g_mutex);
  std::map<std::string, double> out;
  for (const auto& [key, s] : g_sums) {
    const std::string prefix = "fp8/" + key.first + "/" + key.second + "/";
    const double count = static_cast<double>(std::max<int64_t>(s.count, 1));
    out[prefix + "rel_error"] = s.norm_sq > 0 ? std::sqrt(s.error_sq / s.norm_sq) : 0.0;
    out[prefix + "saturated"] = static_cast<double>(s.saturated) / count;
    out[prefix + "flushed"] = static_cast<double>(s.flushed) / count;
    out[prefix + "amax"] = s.amax;
  }
  g_sums.clear();
  return out;
}

}  // namespace latentmoe::ops::fp8
