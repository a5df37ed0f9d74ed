// Per-expert token counts from the router's chosen expert ids (the load that aux-loss-free
// balancing and MaxVio need). Framework-agnostic: raw pointers and a stream, no torch headers.
#pragma once

#include <cuda_runtime_api.h>

#include <cstdint>

namespace latentmoe::kernels {

// counts[e] = #{i < n : expert_ids[i] == e} for e < num_experts; counts is zeroed first.
// Ids outside [0, num_experts) are counted in *out_of_range (a device int64, zeroed first) so
// the caller can report them. Integer atomics: the result is deterministic.
cudaError_t expert_histogram(const int64_t* expert_ids, int64_t n, int64_t num_experts, int64_t* counts,
                             int64_t* out_of_range, cudaStream_t stream);

}  // namespace latentmoe::kernels
