// Rank arithmetic of expert parallelism: EP groups are consecutive ranks, expert-data-parallel
// groups are strided, every expert has exactly one owner per EP group.
#include <gtest/gtest.h>

#include <set>

#include "latentmoe/parallel/layout.h"
#include "latentmoe/util/error.h"
#include "test_util.h"

using latentmoe::parallel::ParallelLayout;

TEST(ParallelLayout, GroupsOfFourRanksWithEpTwo) {
  const ParallelLayout r3(4, 3, 2, 8);
  EXPECT_EQ(r3.ep_rank(), 1);
  EXPECT_EQ(r3.ep_group(), 1);
  EXPECT_EQ(r3.ep_group_ranks(), (std::vector<int>{2, 3}));
  EXPECT_EQ(r3.edp_group_ranks(), (std::vector<int>{1, 3}));
  EXPECT_EQ(r3.first_local_expert(), 4);
  EXPECT_EQ(r3.local_experts(), 4);
  EXPECT_EQ(r3.expert_owner_ep_rank(7), 1);
}

TEST(ParallelLayout, EveryExpertOwnedOncePerEpGroupAndGroupsPartitionTheWorld) {
  for (int world : {1, 2, 4, 8, 12}) {
    for (int ep = 1; ep <= world; ++ep) {
      if (world % ep != 0) continue;
      std::set<std::vector<int>> ep_groups, edp_groups;
      std::vector<int> owners(24, 0);
      for (int rank = 0; rank < world; ++rank) {
        const ParallelLayout l(world, rank, ep, 24 * ep);
        ep_groups.insert(l.ep_group_ranks());
        edp_groups.insert(l.edp_group_ranks());
        EXPECT_EQ(l.ep_group_ranks()[static_cast<size_t>(l.ep_rank())], rank);
        EXPECT_EQ(l.edp_group_ranks()[static_cast<size_t>(l.ep_group())], rank);
      }
      EXPECT_EQ(static_cast<int>(ep_groups.size()), world / ep);
      EXPECT_EQ(static_cast<int>(edp_groups.size()), ep);
      for (int g = 0; g < world / ep; ++g) {  // within one EP group the expert ranges tile [0, E)
        int64_t next = 0;
        for (int i = 0; i < ep; ++i) {
          const ParallelLayout l(world, g * ep + i, ep, 24 * ep);
          EXPECT_EQ(l.first_local_expert(), next);
          next += l.local_experts();
        }
        EXPECT_EQ(next, 24 * ep);
      }
    }
  }
}

// Over all ranks, every tensor of a sharded checkpoint is written exactly once: replicated ones by
// one rank of the world, each expert's by one rank of the EDP group that holds it.
TEST(ParallelLayout, CheckpointWritersCoverEveryTensorOnce) {
  const int64_t experts = 8;
  for (int world : {1, 2, 4, 6}) {
    for (int ep : {1, 2}) {
      if (world % ep != 0) continue;
      std::vector<int> dense_writes(5, 0);
      std::vector<int> expert_writes(static_cast<size_t>(experts), 0);
      for (int rank = 0; rank < world; ++rank) {
        const ParallelLayout l(world, rank, ep, experts);
        std::vector<int64_t> numels{300, 20, 20, 7, 1};  // replicated tensors, the same on every rank
        std::vector<bool> sharded(5, false);
        for (int64_t e = l.first_local_expert(); e < l.first_local_expert() + l.local_experts(); ++e) {
          numels.push_back(50 + e);
          sharded.push_back(true);
        }
        const std::vector<bool> writes = l.checkpoint_writes(numels, sharded);
        for (size_t i = 0; i < 5; ++i) dense_writes[i] += writes[i];
        for (int64_t k = 0; k < l.local_experts(); ++k) expert_writes[static_cast<size_t>(l.first_local_expert() + k)] += writes[5 + static_cast<size_t>(k)];
      }
      for (int n : dense_writes) EXPECT_EQ(n, 1) << "world " << world << " ep " << ep;
      for (int n : expert_writes) EXPECT_EQ(n, 1) << "world " << world << " ep " << ep;
    }
  }
}

TEST(ParallelLayout, BadDegreesNameTheKey) {
  latentmoe::testing::expect_error_contains<latentmoe::ConfigError>([] { ParallelLayout(4, 0, 3, 6); },
                                                                  {"parallel.ep (3) must divide the world size (4 ranks)"});
  latentmoe::testing::expect_error_contains<latentmoe::ConfigError>([] { ParallelLayout(4, 0, 4, 6); },
                                                                  {"model.n_routed_experts (6) must be divisible by parallel.ep (4)"});
}
