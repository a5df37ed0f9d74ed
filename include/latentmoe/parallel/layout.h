// Rank arithmetic of the parallel layout, torch-free. The data-parallel degree is the world
// size; parallel.ep ranks in a row form one expert-parallel (EP) group, which together holds every
// routed expert once; the ranks at the same position of every EP group form an expert-data-
// parallel (EDP) group, which replicates that position's experts (world / ep ranks).
//   world 4, ep 2: EP groups {0,1} {2,3}; EDP groups {0,2} {1,3}; rank 3 holds experts [E/2, E).
#pragma once

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <utility>
#include <vector>

namespace latentmoe::parallel {

struct ParallelLayout {
  // Throws ConfigError naming parallel.ep / model.n_routed_experts when they do not divide.
  ParallelLayout(int world_size, int rank, int ep, int64_t n_routed_experts);

  int world_size, rank, ep;
  int64_t n_routed_experts;

  int ep_rank() const { return rank % ep; }      // position inside the EP group
  int ep_group() const { return rank / ep; }     // which EP group (= position in the EDP group)
  int edp_size() const { return world_size / ep; }
  std::vector<int> ep_group_ranks() const;       // global ranks of this rank's EP group
  std::vector<int> edp_group_ranks() const;      // global ranks of this rank's EDP group
  int64_t local_experts() const { return n_routed_experts / ep; }
  int64_t first_local_expert() const { return ep_rank() * local_experts(); }
  int expert_owner_ep_rank(int64_t expert) const { return static_cast<int>(expert / local_experts()); }

  // Which of this rank's tensors it writes into a sharded checkpoint, so that over all ranks every
  // tensor is written exactly once: replicated tensors are dealt over the world, expert-sharded
  // ones (when ep > 1) over this rank's EDP group — largest first onto the least-loaded writer.
  // Every rank of a group must pass the same tensors in the same order.
  std::vector<bool> checkpoint_writes(const std::vector<int64_t>& numels, const std::vector<bool>& expert_sharded) const;
};

// Gradient buckets of one reduction group (parallel.bucket_size_mb): the group's parameters in
// reverse order (the output side's gradients are ready first); a bucket takes parameters until it
// holds bucket_bytes of fp32 and is padded to a multiple of the group's ranks.
struct BucketPlan {
  struct Slot {
    size_t param = 0;  // index into the list the plan was made from
    int64_t offset = 0, numel = 0;
  };
  struct Bucket {
    std::vector<Slot> slots;
    int64_t numel = 0, padded = 0;
  };
  std::vector<Bucket> buckets;
  std::vector<std::pair<size_t, size_t>> where;  // per parameter: (bucket, slot)
};
BucketPlan plan_buckets(const std::vector<int64_t>& numels, int64_t bucket_bytes, int ranks);

// ZeRO-1: the part [lo, hi) (bucket offsets) of a slot inside `rank`'s chunk of its bucket; empty
// when hi <= lo.
inline std::pair<int64_t, int64_t> zero1_owned_span(int64_t offset, int64_t numel, int64_t chunk, int64_t rank) {
  return {std::max(offset, rank * chunk), std::min(offset + numel, (rank + 1) * chunk)};
}

}  // namespace latentmoe::parallel
