// Validates the tensor, then calls the torch-free kernel on torch's current stream.
#include <ATen/ATen.h>
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAGuard.h>

#include <torch/library.h>

#include "expert_histogram.cuh"
#include "ops/expert_counts_cuda.h"
#include "ops/op_checks.h"

namespace latentmoe::ops {

at::Tensor expert_token_counts_cuda(const at::Tensor& expert_ids, int64_t num_experts) {
  check_expert_token_counts_inputs(expert_ids, num_experts);
  const c10::cuda::CUDAGuard guard(expert_ids.device());
  const at::Tensor ids = expert_ids.to(at::kLong).contiguous();
  at::Tensor counts = at::empty({num_experts}, ids.options());
  at::Tensor bad = at::empty({1}, ids.options());
  const cudaError_t err = kernels::expert_histogram(ids.data_ptr<int64_t>(), ids.numel(), num_experts,
                                                    counts.data_ptr<int64_t>(), bad.data_ptr<int64_t>(),
                                                    at::cuda::getCurrentCUDAStream());
  TORCH_CHECK(err == cudaSuccess, "expert_token_counts: CUDA kernel failed: ", cudaGetErrorString(err));
  const int64_t n_bad = bad.item<int64_t>();
  TORCH_CHECK(n_bad == 0, "expert_token_counts: ", n_bad, " expert id(s) outside [0, ", num_experts, ")");
  return counts;
}

TORCH_LIBRARY_IMPL(latentmoe, CUDA, m) { m.impl("expert_token_counts", &expert_token_counts_cuda); }

}  // namespace latentmoe::ops
