// expert_token_counts CUDA kernel against the ATen reference; skips cleanly without a GPU.
#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include "latentmoe/ops/expert_counts.h"

namespace ops = latentmoe::ops;

TEST(ExpertCountsGpu, CudaKernelMatchesReference) {
  if (!at::hasCUDA()) GTEST_SKIP() << "no CUDA device";
  at::manual_seed(5);
  for (int64_t tokens : {0, 1, 989, 70001}) {
    for (int64_t experts : {1, 256, 5000}) {
      const at::Tensor ids = at::randint(experts, {tokens, 8}, at::kLong);
      EXPECT_TRUE(at::equal(ops::expert_token_counts(ids.cuda(), experts).cpu(),
                            ops::expert_token_counts_reference(ids, experts)))
          << tokens << " tokens, " << experts << " experts";
    }
  }
  EXPECT_THROW(ops::expert_token_counts(at::tensor({9}, at::kLong).cuda(), 4), c10::Error);
}
