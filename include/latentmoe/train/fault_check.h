// Telling a bad step from a bad machine. Fingerprints are bit-exact (a hash of the values' bytes):
// on CPU, with deterministic kernels, re-executing a step from the same state reproduces it bit
// for bit, and every replica of a replicated parameter holds the same bits. A difference is a
// fault of the machine (memory, arithmetic, communication), not of the data or the model.
#pragma once

#include <torch/types.h>

#include <cstdint>
#include <string>
#include <vector>

namespace latentmoe::parallel {
class Communicator;
}

namespace latentmoe::train {

// 64-bit fingerprint of a tensor's values (its contiguous CPU bytes), chained from `seed`.
// (Scalars are folded in with util/hash.h's mix64.)
uint64_t tensor_fingerprint(const torch::Tensor& tensor, uint64_t seed = 0);

// What one execution of a step produced on this rank.
struct StepFingerprint {
  uint64_t local = 0;    // this rank's losses and gradients before any reduction
  uint64_t reduced = 0;  // the reduced step scalars and gradient norm (the same on every rank)
};

// The step and its rerun compared on every rank. differing_ranks: global ranks whose own result
// changed. reduced_differs: the reduced result changed.
struct RerunVerdict {
  std::vector<int> differing_ranks;
  bool reduced_differs = false;
  bool identical() const { return differing_ranks.empty() && !reduced_differs; }
};
// Collective over `comm` (nullptr = one process).
RerunVerdict compare_rerun(parallel::Communicator* comm, const StepFingerprint& first, const StepFingerprint& rerun);

// Every rank of `comm` contributes the fingerprint of its copy. diverging: the global ranks whose
// copy differs from the reference, the copy most ranks hold (a tie, as with two replicas, takes
// the copy of the lowest rank among the tied, and says so).
struct ReplicaVerdict {
  std::vector<int> diverging;
  int reference_rank = 0;  // global rank holding the reference copy
  bool majority = true;    // false: no copy is held by more ranks than every other
  bool consistent() const { return diverging.empty(); }
};
ReplicaVerdict compare_replicas(parallel::Communicator& comm, uint64_t fingerprint, const std::string& what);

// "rank 1" / "ranks 1, 3".
std::string describe_ranks(const std::vector<int>& ranks);

}  // namespace latentmoe::train
