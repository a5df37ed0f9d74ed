// expert_token_counts: how many routed (token, slot) assignments each expert received.
// One op, three implementations behind it: a plain-ATen reference, a CPU loop, and a CUDA kernel
// (kernels/expert_histogram.cu); the device of `expert_ids` picks the path.
#pragma once

#include <ATen/core/Tensor.h>

namespace latentmoe::ops {

// expert_ids: integer tensor of any shape (e.g. the router's [tokens, top_k] choices).
// Returns int64 [num_experts]. Throws c10::Error naming the bad id when one is out of range.
at::Tensor expert_token_counts(const at::Tensor& expert_ids, int64_t num_experts);

// The plain-ATen reference (bincount), for tests and benchmarks.
at::Tensor expert_token_counts_reference(const at::Tensor& expert_ids, int64_t num_experts);

}  // namespace latentmoe::ops
