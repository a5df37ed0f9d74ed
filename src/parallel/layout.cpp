#include "latentmoe/parallel/layout.h"

#include <fmt/format.h>

#include <algorithm>
#include <numeric>

#include "latentmoe/util/error.h"

namespace latentmoe::parallel {

ParallelLayout::ParallelLayout(int world_size_, int rank_, int ep_, int64_t n_routed_experts_)
    : world_size(world_size_), rank(rank_), ep(ep_), n_routed_experts(n_routed_experts_) {
  if (ep < 1 || world_size % ep != 0) {
    throw ConfigError(fmt::format("parallel.ep ({}) must divide the world size ({} ranks)", ep, world_size));
  }
  if (n_routed_experts > 0 && n_routed_experts % ep != 0) {
    throw ConfigError(fmt::format("model.n_routed_experts ({}) must be divisible by parallel.ep ({})", n_routed_experts, ep));
  }
}

std::vector<int> ParallelLayout::ep_group_ranks() const {
  std::vector<int> ranks;
  for (int i = 0; i < ep; ++i) ranks.push_back(ep_group() * ep + i);
  return ranks;
}

std::vector<int> ParallelLayout::edp_group_ranks() const {
  std::vector<int> ranks;
  for (int g = 0; g < edp_size(); ++g) ranks.push_back(g * ep + ep_rank());
  return ranks;
}

std::vector<bool> ParallelLayout::checkpoint_writes(const std::vector<int64_t>& numels,
                                                    const std::vector<bool>& expert_sharded) const {
  std::vector<bool> mine(numels.size(), false);
  for (const bool expert : {false, true}) {
    std::vector<size_t> order;
    for (size_t i = 0; i < numels.size(); ++i) {
      if ((ep > 1 && expert_sharded[i]) == expert) order.push_back(i);
    }
    std::stable_sort(order.begin(), order.end(), [&](size_t a, size_t b) { return numels[a] > numels[b]; });
    const int writers = expert ? edp_size() : world_size;
    const int me = expert ? ep_group() : rank;
    std::vector<int64_t> load(static_cast<size_t>(writers), 0);
    for (size_t i : order) {
      const auto least = std::min_element(load.begin(), load.end()) - load.begin();
      load[static_cast<size_t>(least)] += numels[i];
      mine[i] = least == me;
    }
  }
  return mine;
}

BucketPlan plan_buckets(const std::vector<int64_t>& numels, int64_t bucket_bytes, int ranks) {
  BucketPlan plan;
  plan.where.assign(numels.size(), {0, 0});
  const auto close = [ranks](BucketPlan::Bucket& b) { b.padded = (b.numel + ranks - 1) / ranks * ranks; };
  for (size_t k = numels.size(); k-- > 0;) {
    if (plan.buckets.empty() || plan.buckets.back().numel * 4 >= bucket_bytes) {
      if (!plan.buckets.empty()) close(plan.buckets.back());
      plan.buckets.emplace_back();
    }
    BucketPlan::Bucket& b = plan.buckets.back();
    plan.where[k] = {plan.buckets.size() - 1, b.slots.size()};
    b.slots.push_back({k, b.numel, numels[k]});
    b.numel += numels[k];
  }
  if (!plan.buckets.empty()) close(plan.buckets.back());
  return plan;
}

}  // namespace latentmoe::parallel
