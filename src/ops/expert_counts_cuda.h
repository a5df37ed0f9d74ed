// CUDA kernel binding of expert_token_counts (compiled with LATENTMOE_WITH_CUDA only).
#pragma once

#include <ATen/core/Tensor.h>

namespace latentmoe::ops {
at::Tensor expert_token_counts_cuda(const at::Tensor& expert_ids, int64_t num_experts);
}  // namespace latentmoe::ops
