// Fused ops against their ATen references, forward + backward, at the presets' shapes
// (rows = micro-batch tokens, widths = hidden / intermediate sizes), fp32 and bf16.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <benchmark/benchmark.h>
#include <torch/autograd.h>

#include "latentmoe/ops/rms_norm.h"
#include "latentmoe/ops/swiglu.h"

namespace {
at::ScalarType dtype_of(int64_t code) { return code == 0 ? at::kFloat : at::kBFloat16; }

template <bool kReference>
void rms_norm(benchmark::State& state) {
  const int64_t rows = state.range(0), dim = state.range(1);
  const at::ScalarType dtype = dtype_of(state.range(2));
  at::manual_seed(0);
  const at::Tensor x = at::randn({rows, dim}).to(dtype).set_requires_grad(true);
  const at::Tensor w = at::rand({dim}).set_requires_grad(true);
  const at::Tensor g = at::randn({rows, dim}).to(dtype);
  for (auto _ : state) {
    at::Tensor y = kReference ? latentmoe::ops::rms_norm_reference(x, w, 1e-6) : latentmoe::ops::rms_norm(x, w, 1e-6);
    y.backward(g);
    benchmark::DoNotOptimize(x.grad().data_ptr());
  }
  state.SetBytesProcessed(state.iterations() * rows * dim * static_cast<int64_t>(at::elementSize(dtype)) * 5);
  state.SetLabel(std::string(c10::toString(dtype)) + ", " + std::to_string(at::get_num_threads()) + " threads");
}

template <bool kReference>
void swiglu(benchmark::State& state) {
  const int64_t rows = state.range(0), dim = state.range(1);
  const at::ScalarType dtype = dtype_of(state.range(2));
  at::manual_seed(0);
  const at::Tensor a = at::randn({rows, dim}).to(dtype).set_requires_grad(true);
  const at::Tensor b = at::randn({rows, dim}).to(dtype).set_requires_grad(true);
  const at::Tensor g = at::randn({rows, dim}).to(dtype);
  for (auto _ : state) {
    at::Tensor y = kReference ? latentmoe::ops::swiglu_reference(a, b) : latentmoe::ops::swiglu(a, b);
    y.backward(g);
    benchmark::DoNotOptimize(a.grad().data_ptr());
  }
  state.SetBytesProcessed(state.iterations() * rows * dim * static_cast<int64_t>(at::elementSize(dtype)) * 6);
  state.SetLabel(std::string(c10::toString(dtype)) + ", " + std::to_string(at::get_num_threads()) + " threads");
}

// {rows, width, dtype (0 fp32, 1 bf16)}: debug (1024 tokens x 128), small (2048 tokens x 512).
void norm_shapes(benchmark::internal::Benchmark* b) {
  for (int64_t dtype : {0, 1}) {
    b->Args({1024, 128, dtype});
    b->Args({2048, 512, dtype});
  }
}
// debug dense/expert widths, small shared-expert and dense widths.
void swiglu_shapes(benchmark::internal::Benchmark* b) {
  for (int64_t dtype : {0, 1}) {
    b->Args({1024, 384, dtype});
    b->Args({2048, 384, dtype});
    b->Args({2048, 1536, dtype});
  }
}
}  // namespace

BENCHMARK(rms_norm<false>)->Name("rms_norm/fused")->Apply(norm_shapes)->UseRealTime();
BENCHMARK(rms_norm<true>)->Name("rms_norm/aten")->Apply(norm_shapes)->UseRealTime();
BENCHMARK(swiglu<false>)->Name("swiglu/fused")->Apply(swiglu_shapes)->UseRealTime();
BENCHMARK(swiglu<true>)->Name("swiglu/aten")->Apply(swiglu_shapes)->UseRealTime();
BENCHMARK_MAIN();
