// Expert histogram: block-local shared-memory counts, then one global atomic per expert per block.
#include "expert_histogram.cuh"

namespace latentmoe::kernels {

namespace {
constexpr int kThreads = 256;
constexpr int64_t kMaxSharedExperts = 4096;  // 32 KiB of shared counters

__global__ void histogram_shared(const int64_t* __restrict__ ids, int64_t n, int64_t num_experts,
                                 unsigned long long* __restrict__ counts, unsigned long long* __restrict__ bad) {
  extern __shared__ unsigned long long local[];
  for (int64_t e = threadIdx.x; e < num_experts; e += blockDim.x) local[e] = 0;
  __syncthreads();
  unsigned long long local_bad = 0;
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t e = ids[i];
    if (e >= 0 && e < num_experts) {
      atomicAdd(&local[e], 1ULL);
    } else {
      ++local_bad;
    }
  }
  if (local_bad) atomicAdd(bad, local_bad);
  __syncthreads();
  for (int64_t e = threadIdx.x; e < num_experts; e += blockDim.x) {
    if (local[e]) atomicAdd(&counts[e], local[e]);
  }
}

__global__ void histogram_global(const int64_t* __restrict__ ids, int64_t n, int64_t num_experts,
                                 unsigned long long* __restrict__ counts, unsigned long long* __restrict__ bad) {
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t e = ids[i];
    atomicAdd((e >= 0 && e < num_experts) ? &counts[e] : bad, 1ULL);
  }
}
}  // namespace

cudaError_t expert_histogram(const int64_t* expert_ids, int64_t n, int64_t num_experts, int64_t* counts,
                             int64_t* out_of_range, cudaStream_t stream) {
  if (n < 0 || num_experts <= 0) return cudaErrorInvalidValue;
  cudaError_t err = cudaMemsetAsync(counts, 0, sizeof(int64_t) * num_experts, stream);
  if (err == cudaSuccess) err = cudaMemsetAsync(out_of_range, 0, sizeof(int64_t), stream);
  if (err != cudaSuccess || n == 0) return err;
  const int64_t wanted_blocks = (n + kThreads - 1) / kThreads;
  const int blocks = static_cast<int>(wanted_blocks < 1024 ? wanted_blocks : 1024);
  auto* out = reinterpret_cast<unsigned long long*>(counts);
  auto* bad = reinterpret_cast<unsigned long long*>(out_of_range);
  if (num_experts <= kMaxSharedExperts) {
    histogram_shared<<<blocks, kThreads, sizeof(unsigned long long) * num_experts, stream>>>(expert_ids, n, num_experts,
                                                                                              out, bad);
  } else {
    histogram_global<<<blocks, kThreads, 0, stream>>>(expert_ids, n, num_experts, out, bad);
  }
  return cudaGetLastError();
}

}  // namespace latentmoe::kernels
