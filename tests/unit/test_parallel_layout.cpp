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

TEST(ParallelLayout, BadDegreesNameTheKey) {
  latentmoe::testing::expect_error_contains<latentmoe::ConfigError>([] { ParallelLayout(4, 0, 3, 6); },
                                                                  {"parallel.ep (3) must divide the world size (4 ranks)"});
  latentmoe::testing::expect_error_contains<latentmoe::ConfigError>([] { ParallelLayout(4, 0, 4, 6); },
                                                                  {"model.n_routed_experts (6) must be divisible by parallel.ep (4)"});
}
