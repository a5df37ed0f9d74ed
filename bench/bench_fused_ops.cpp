// Fused ops against their ATen references, forward + backward, at the presets' shapes
// (rows = micro-batch tokens, widths = hidden / intermediate sizes), fp32 and bf16.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <benchmark/benchmark.h>
#include <torch/autograd.h>

#include <algorithm>
#include <cstdint>

#include "latentmoe/ops/grouped_linear.h"
#include "latentmoe/ops/moe_permute.h"
#include "latentmoe/ops/moe_router.h"
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

// The routed experts' gate+up projection, forward + backward: {rows, experts, in, out, dtype, impl,
// reroute} with impl 0 = one GEMM per group, 1 = at::_grouped_mm, 2 = the reference (at::linear per
// group + cat). Rows are spread unevenly over the experts like a router's load (one expert empty);
// with reroute = 1 each iteration moves up to 63 rows of that load between two experts, as routing
// changes every step, so the GEMM shapes keep changing (oneDNN builds a primitive per new shape; see
// grouped_linear.cpp's row buckets).
void grouped_linear(benchmark::State& state) {
  const int64_t rows = state.range(0), experts = state.range(1), in = state.range(2), out = state.range(3);
  const at::ScalarType dtype = dtype_of(state.range(4));
  const int64_t impl = state.range(5);
  std::vector<int64_t> sizes(static_cast<size_t>(experts), 0);
  int64_t left = rows;
  for (int64_t e = 1; e < experts; ++e) {
    const int64_t n = e + 1 == experts ? left : std::min(left, rows * (e % 3 + 1) / (2 * experts));
    sizes[static_cast<size_t>(e)] = n;
    left -= n;
  }
  at::manual_seed(0);
  const at::Tensor x = at::randn({rows, in}).to(dtype).set_requires_grad(true);
  const at::Tensor w = at::randn({experts, out, in}).div(16).to(dtype).set_requires_grad(true);
  const at::Tensor g = at::randn({rows, out}).to(dtype);
  latentmoe::ops::set_cpu_grouped_gemm_impl(impl == 1 ? latentmoe::ops::GroupedGemmImpl::torch_grouped_mm
                                                      : latentmoe::ops::GroupedGemmImpl::per_group_gemm);
  const bool reroute = state.range(6) != 0;
  const std::vector<int64_t> base = sizes;
  uint64_t lcg = 12345;
  for (auto _ : state) {
    if (reroute) {  // the base load with 1..63 rows moved from one non-empty expert to another
      lcg = lcg * 6364136223846793005ull + 1442695040888963407ull;
      const auto from = static_cast<size_t>(1 + (lcg >> 33) % static_cast<uint64_t>(experts - 1));
      const auto to = static_cast<size_t>(1 + (lcg >> 45) % static_cast<uint64_t>(experts - 1));
      sizes = base;
      const int64_t moved = std::min<int64_t>(sizes[from], static_cast<int64_t>(1 + (lcg >> 20) % 63));
      sizes[from] -= moved, sizes[to] += moved;
    }
    at::Tensor y = impl == 2 ? latentmoe::ops::grouped_linear_reference(x, w, sizes)
                             : latentmoe::ops::grouped_linear(x, w, sizes);
    y.backward(g);
    benchmark::DoNotOptimize(w.grad().data_ptr());
  }
  latentmoe::ops::set_cpu_grouped_gemm_impl(latentmoe::ops::GroupedGemmImpl::per_group_gemm);
  state.counters["GFLOPS"] = benchmark::Counter(6.0 * rows * in * out, benchmark::Counter::kIsIterationInvariantRate,
                                                benchmark::Counter::kIs1000);
  state.SetLabel(std::string(c10::toString(dtype)) + ", " + std::to_string(at::get_num_threads()) + " threads");
}

// Permute the tokens, then the gate-weighted combine, forward + backward: {tokens, top_k, hidden, dtype}.
template <bool kReference>
void moe_permute_combine(benchmark::State& state) {
  const int64_t tokens = state.range(0), top_k = state.range(1), hidden = state.range(2);
  const at::ScalarType dtype = dtype_of(state.range(3));
  at::manual_seed(0);
  const at::Tensor positions =
      latentmoe::ops::moe_positions(at::randint(0, 16, {tokens * top_k}, at::kLong).argsort(true), top_k);
  const at::Tensor x = at::randn({tokens, hidden}).to(dtype).set_requires_grad(true);
  const at::Tensor weights = at::rand({tokens, top_k}).set_requires_grad(true);
  const at::Tensor g = at::randn({tokens, hidden}).to(dtype);
  namespace ops = latentmoe::ops;
  for (auto _ : state) {
    const at::Tensor sorted = kReference ? ops::moe_permute_reference(x, positions) : ops::moe_permute(x, positions);
    at::Tensor y = kReference ? ops::moe_unpermute_reference(sorted, positions, weights)
                              : ops::moe_unpermute(sorted, positions, weights);
    y.backward(g);
    benchmark::DoNotOptimize(x.grad().data_ptr());
  }
  state.SetLabel(std::string(c10::toString(dtype)) + ", " + std::to_string(at::get_num_threads()) + " threads");
}

// The gate after its GEMM, forward + backward: {tokens, experts, top_k, n_group, topk_group}.
template <bool kReference>
void moe_router(benchmark::State& state) {
  const int64_t tokens = state.range(0), experts = state.range(1);
  const latentmoe::ops::RouterChoice choice{state.range(2), state.range(3), state.range(4), true, true, 2.5};
  at::manual_seed(0);
  const at::Tensor logits = at::randn({tokens, experts}).set_requires_grad(true);
  const at::Tensor bias = at::randn({experts}).mul(0.01);
  const at::Tensor g = at::randn({tokens, choice.top_k});
  for (auto _ : state) {
    auto out = kReference ? latentmoe::ops::moe_router_reference(logits, bias, choice)
                          : latentmoe::ops::moe_router(logits, bias, choice);
    (std::get<1>(out) * g).sum().backward();
    benchmark::DoNotOptimize(logits.grad().data_ptr());
  }
  state.SetLabel(std::to_string(at::get_num_threads()) + " threads");
}

void grouped_shapes(benchmark::internal::Benchmark* b) {
  for (int64_t dtype : {0, 1}) {
    for (int64_t impl : {0, 1, 2}) {
      for (int64_t reroute : {0, 1}) {
        b->Args({2048, 8, 128, 128, dtype, impl, reroute});   // debug: 1024 tokens x top-2, 8 experts of 64
        b->Args({4096, 16, 512, 768, dtype, impl, reroute});  // small: 2048 tokens x top-2, 16 experts of 384
      }
    }
  }
}

void permute_shapes(benchmark::internal::Benchmark* b) {
  for (int64_t dtype : {0, 1}) {
    b->Args({1024, 2, 128, dtype});
    b->Args({2048, 2, 512, dtype});
  }
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
BENCHMARK(grouped_linear)->Name("grouped_linear")->Apply(grouped_shapes)->UseRealTime();
BENCHMARK(moe_permute_combine<false>)->Name("moe_permute_combine/fused")->Apply(permute_shapes)->UseRealTime();
BENCHMARK(moe_permute_combine<true>)->Name("moe_permute_combine/aten")->Apply(permute_shapes)->UseRealTime();
BENCHMARK(moe_router<false>)->Name("moe_router/fused")->Args({1024, 8, 2, 4, 2})->Args({2048, 16, 2, 4, 2})->Args({4096, 256, 8, 8, 4})->UseRealTime();
BENCHMARK(moe_router<true>)->Name("moe_router/aten")->Args({1024, 8, 2, 4, 2})->Args({2048, 16, 2, 4, 2})->Args({4096, 256, 8, 8, 4})->UseRealTime();
BENCHMARK_MAIN();
