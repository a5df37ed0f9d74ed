// Activation memory and time of one training micro-batch per train.recompute mode: a counting
// CPU allocator (wrapping torch's) reports the bytes that are live after the forward beyond the
// weights (the activations kept for the backward) and the peak during forward + backward.
//
//   build/bench/bench_activation_memory [--config debug] [--seq 1024] [--batch 2] [--dtype fp32|bf16]
//                                       [--fp8 none|blockwise|tensorwise]
#include <ATen/autocast_mode.h>
#include <c10/core/CPUAllocator.h>
#include <c10/core/impl/alloc_cpu.h>
#include <fmt/format.h>

#include <algorithm>
#include <mutex>
#include <unordered_map>
#include <chrono>
#include <cstring>
#include <string>

#include "latentmoe/config/loader.h"
#include "latentmoe/model/deepseek_v3.h"
#include "latentmoe/model/recompute.h"
#include "latentmoe/ops/linear_cross_entropy.h"

namespace {
// data == context (oneDNN's scratchpads go through raw_allocate, which requires it): the sizes
// live in a map keyed by the pointer.
class CountingAllocator final : public c10::Allocator {
 public:
  c10::DataPtr allocate(size_t bytes) override {
    void* data = c10::alloc_cpu(bytes);
    {
      const std::lock_guard<std::mutex> lock(mutex_);
      sizes_[data] = static_cast<int64_t>(bytes);
      live_ += static_cast<int64_t>(bytes);
      peak_ = std::max(peak_, live_);
    }
    return {data, data, &release, c10::Device(c10::DeviceType::CPU)};
  }
  c10::DeleterFnPtr raw_deleter() const override { return &release; }
  void copy_data(void* dest, const void* src, std::size_t count) const override { std::memcpy(dest, src, count); }

  int64_t live() {
    const std::lock_guard<std::mutex> lock(mutex_);
    return live_;
  }
  void reset_peak() {
    const std::lock_guard<std::mutex> lock(mutex_);
    peak_ = live_;
  }
  int64_t peak() {
    const std::lock_guard<std::mutex> lock(mutex_);
    return peak_;
  }
  static CountingAllocator& instance() {
    static CountingAllocator a;
    return a;
  }

 private:
  static void release(void* data) {
    CountingAllocator& a = instance();
    {
      const std::lock_guard<std::mutex> lock(a.mutex_);
      const auto it = a.sizes_.find(data);
      if (it != a.sizes_.end()) {
        a.live_ -= it->second;
        a.sizes_.erase(it);
      }
    }
    c10::free_cpu(data);
  }
  std::mutex mutex_;
  std::unordered_map<void*, int64_t> sizes_;
  int64_t live_ = 0, peak_ = 0;
};

std::string arg(int argc, char** argv, const std::string& name, const std::string& fallback) {
  for (int i = 1; i + 1 < argc; ++i) {
    if (name == argv[i]) return argv[i + 1];
  }
  return fallback;
}
}  // namespace

int main(int argc, char** argv) {
  namespace model = latentmoe::model;
  const std::string preset = arg(argc, argv, "--config", "debug");
  const int64_t seq = std::stoll(arg(argc, argv, "--seq", "1024"));
  const int64_t batch = std::stoll(arg(argc, argv, "--batch", "2"));
  const bool bf16 = arg(argc, argv, "--dtype", "fp32") == "bf16";
  const std::string fp8 = arg(argc, argv, "--fp8", "none");
  const latentmoe::ops::fp8::Recipe recipe{.scaling = latentmoe::ops::fp8::parse_scaling(fp8)};
  CountingAllocator& counting = CountingAllocator::instance();
  c10::SetCPUAllocator(&counting, /*priority=*/100);

  auto cfg = latentmoe::config::load_config(preset, {}).model;
  cfg.num_nextn_predict_layers = 0;
  fmt::print("{} preset, seq {}, micro-batch {}, {}, fp8 {}, {} threads\n", preset, seq, batch, bf16 ? "bf16" : "fp32",
             fp8, at::get_num_threads());
  fmt::print("{:<10} {:>22} {:>22} {:>14}\n", "recompute", "kept after forward MB", "peak above weights MB",
             "fwd+bwd s");
  double none_kept = 0;
  for (const auto mode : {model::Recompute::none, model::Recompute::selective, model::Recompute::full}) {
    torch::manual_seed(0);
    model::DeepSeekV3 m(cfg);
    m->reset_parameters(cfg.init_std, 1);
    m->set_recompute(mode);
    if (recipe.enabled()) m->set_fp8(recipe);
    m->train();
    const torch::Tensor ids = torch::randint(0, cfg.vocab_size, {batch, seq}, torch::kLong);
    const torch::Tensor labels = torch::randint(0, cfg.vocab_size, {batch * seq}, torch::kLong);
    double best = 1e30;
    int64_t kept = 0, peak = 0;
    for (int rep = 0; rep < 3; ++rep) {  // the first repetition also allocates the gradients
      m->zero_grad();
      const int64_t before = counting.live();
      counting.reset_peak();
      const auto start = std::chrono::steady_clock::now();
      at::autocast::set_autocast_enabled(c10::DeviceType::CPU, bf16);
      at::autocast::set_autocast_dtype(c10::DeviceType::CPU, at::kBFloat16);
      const model::ModelOutput out = m->forward(ids, /*with_mtp=*/false, nullptr, /*compute_logits=*/false);
      const torch::Tensor loss = latentmoe::ops::linear_cross_entropy(
          out.head_input.reshape({batch * seq, -1}), out.head_weight, labels, -100);
      at::autocast::set_autocast_enabled(c10::DeviceType::CPU, false);
      at::autocast::clear_cache();
      kept = counting.live() - before;
      loss.backward();
      best = std::min(best, std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count());
      peak = counting.peak() - before;
    }
    const char* name = mode == model::Recompute::none ? "none" : mode == model::Recompute::selective ? "selective" : "full";
    if (mode == model::Recompute::none) none_kept = static_cast<double>(kept);
    fmt::print("{:<10} {:>14.1f} ({:>4.0f} %) {:>22.1f} {:>14.3f}\n", name, kept / 1e6, 100.0 * kept / none_kept,
               peak / 1e6, best);
  }
  return 0;
}
