// FP8: the quantizers (CPU kernel vs the ATen reference; the CUDA kernels when a GPU is there,
// with achieved GB/s) and an FP8 projection forward + backward against the bf16 one (CPU
// emulation here; on CUDA sm_90 the blockwise-scaled cuBLASLt GEMMs, with TFLOP/s).
//
//   build/bench/bench_fp8 [--benchmark_filter=quantize]
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <ATen/autocast_mode.h>
#include <benchmark/benchmark.h>

#include <string>

#include "latentmoe/ops/fp8.h"
#include "latentmoe/ops/fp8_linear.h"
#include "latentmoe/ops/linear.h"

namespace fp8 = latentmoe::ops::fp8;

namespace {

at::Device device_of(int64_t code) { return code == 0 ? at::Device(at::kCPU) : at::Device(at::kCUDA); }

void sync(const at::Device& d) {
  if (d.is_cuda()) at::zeros({1}, at::TensorOptions(d)).cpu();  // waits for the stream
}

// {rows, cols, kind (0 rows, 1 transposed rows, 2 blocks, 3 rows reference), device, dtype (0 fp32, 1 bf16)}
void quantize(benchmark::State& state) {
  const int64_t rows = state.range(0), cols = state.range(1), kind = state.range(2);
  const at::Device device = device_of(state.range(3));
  const at::ScalarType dtype = state.range(4) == 0 ? at::kFloat : at::kBFloat16;
  const at::Tensor x = at::randn({rows, cols}).to(dtype).to(device);
  for (auto _ : state) {
    const fp8::Quantized q = kind == 0   ? fp8::quantize_rows(x, false)
                             : kind == 1 ? fp8::quantize_rows_transposed(x, false)
                             : kind == 2 ? fp8::quantize_blocks(x, false)
                                         : fp8::quantize_rows_reference(x, false);
    benchmark::DoNotOptimize(q.data.data_ptr());
    sync(device);
  }
  // Read the input, write one byte per element (scales are 1/128 of that).
  state.SetBytesProcessed(state.iterations() * rows * cols * (static_cast<int64_t>(at::elementSize(dtype)) + 1));
  state.SetLabel(std::string(c10::toString(dtype)) + (device.is_cuda() ? ", cuda" : ", cpu ") +
                 std::to_string(at::get_num_threads()) + " threads");
}

// {tokens, in, out, fp8 (0 bf16 projection, 1 FP8 blockwise), device}: forward + backward under bf16 autocast.
void projection(benchmark::State& state) {
  const int64_t tokens = state.range(0), in = state.range(1), out = state.range(2);
  const bool use_fp8 = state.range(3) != 0;
  const at::Device device = device_of(state.range(4));
  const at::Tensor x = at::randn({tokens, in}).to(at::kBFloat16).to(device).set_requires_grad(true);
  const at::Tensor w = (at::randn({out, in}) * 0.02).to(device).set_requires_grad(true);
  const at::Tensor g = at::randn({tokens, out}).to(at::kBFloat16).to(device);
  const fp8::Recipe recipe{.scaling = fp8::Scaling::blockwise};
  for (auto _ : state) {
    at::autocast::set_autocast_enabled(device.type(), true);
    at::autocast::set_autocast_dtype(device.type(), at::kBFloat16);
    const at::Tensor y = use_fp8 ? fp8::linear(x, w, std::nullopt, recipe, "bench") : latentmoe::ops::linear(x, w);
    at::autocast::set_autocast_enabled(device.type(), false);
    at::autocast::clear_cache();
    y.backward(g);
    benchmark::DoNotOptimize(w.grad().data_ptr());
    sync(device);
  }
  const double flops = 6.0 * static_cast<double>(tokens * in * out);  // forward, dgrad, wgrad
  state.counters["TFLOP/s"] = benchmark::Counter(flops / 1e12, benchmark::Counter::kIsIterationInvariantRate);
  state.SetLabel(std::string(use_fp8 ? "fp8 blockwise" : "bf16") + (device.is_cuda() ? ", cuda" : ", cpu"));
}

void register_all(int64_t device, const char* suffix) {
  for (int64_t dtype : {0, 1}) {
    for (int64_t kind : {0, 1, 2, 3}) {
      if (device == 1 && kind == 3) continue;
      const char* names[] = {"rows", "rows_transposed", "blocks", "rows_reference"};
      benchmark::RegisterBenchmark((std::string("fp8_quantize/") + names[kind] + suffix).c_str(), quantize)
          ->Args({2048, 512, kind, device, dtype})    // small: a micro-batch of activations
          ->Args({4096, 7168, kind, device, dtype})   // DeepSeek-V3's hidden width
          ->UseRealTime();
    }
  }
  for (int64_t use_fp8 : {0, 1}) {
    benchmark::RegisterBenchmark((std::string(use_fp8 ? "projection/fp8" : "projection/bf16") + suffix).c_str(),
                                 projection)
        ->Args({2048, 512, 1536, use_fp8, device})                                   // small: dense MLP up
        ->Args({device == 1 ? 8192 : 1024, 2048, device == 1 ? 7168 : 2048, use_fp8, device})  // wide
        ->UseRealTime();
  }
}
}  // namespace

int main(int argc, char** argv) {
  register_all(0, "/cpu");
  if (at::hasCUDA()) register_all(1, "/cuda");
  benchmark::Initialize(&argc, argv);
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
