// expert_token_counts: the CPU path vs the ATen reference (bincount), and the CUDA kernel when a
// GPU is present. Shapes are router outputs: tokens x top-k ids over E experts.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <benchmark/benchmark.h>

#include "latentmoe/ops/expert_counts.h"

namespace {
at::Tensor make_ids(int64_t tokens, int64_t top_k, int64_t experts, c10::Device device) {
  at::manual_seed(0);
  return at::randint(experts, {tokens, top_k}, at::TensorOptions(at::kLong)).to(device);
}

template <bool kReference>
void run(benchmark::State& state, c10::Device device) {
  const int64_t tokens = state.range(0), top_k = state.range(1), experts = state.range(2);
  const at::Tensor ids = make_ids(tokens, top_k, experts, device);
  for (auto _ : state) {
    at::Tensor counts = kReference ? latentmoe::ops::expert_token_counts_reference(ids, experts)
                                   : latentmoe::ops::expert_token_counts(ids, experts);
    if (device.is_cuda()) counts.cpu();  // synchronizes
    benchmark::DoNotOptimize(counts.data_ptr());
  }
  state.SetItemsProcessed(state.iterations() * tokens * top_k);
  state.SetBytesProcessed(state.iterations() * tokens * top_k * static_cast<int64_t>(sizeof(int64_t)));
  state.SetLabel(std::to_string(at::get_num_threads()) + " threads");
}

void shapes(benchmark::internal::Benchmark* b) {
  // debug-model micro-batch, a 4K-token micro-batch of V3 (top-8 of 256), and a large batch.
  b->Args({1024, 2, 8})->Args({4096, 8, 256})->Args({65536, 8, 256})->Unit(benchmark::kMicrosecond);
}
}  // namespace

static void BM_expert_counts_cpu(benchmark::State& s) { run<false>(s, c10::kCPU); }
static void BM_expert_counts_reference_cpu(benchmark::State& s) { run<true>(s, c10::kCPU); }
BENCHMARK(BM_expert_counts_cpu)->Apply(shapes);
BENCHMARK(BM_expert_counts_reference_cpu)->Apply(shapes);

#ifdef LATENTMOE_WITH_CUDA
#include <ATen/cuda/CUDAContext.h>
static void BM_expert_counts_cuda(benchmark::State& s) {
  if (!at::hasCUDA()) {
    s.SkipWithError("no CUDA device");
    return;
  }
  run<false>(s, c10::Device(c10::kCUDA, 0));
}
BENCHMARK(BM_expert_counts_cuda)->Apply(shapes);
#endif

BENCHMARK_MAIN();
