// expert_token_counts: the CPU path and (with a GPU) the CUDA kernel against the ATen reference.
#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include "latentmoe/ops/expert_counts.h"

namespace ops = latentmoe::ops;

namespace {
void expect_matches_reference(const at::Tensor& ids, int64_t experts) {
  const at::Tensor expected = ops::expert_token_counts_reference(ids.cpu(), experts);
  const at::Tensor got = ops::expert_token_counts(ids, experts).cpu();
  EXPECT_EQ(got.scalar_type(), at::kLong);
  EXPECT_TRUE(at::equal(got, expected)) << "ids " << ids.sizes() << " experts " << experts;
  EXPECT_EQ(got.sum().item<int64_t>(), ids.numel());
}
}  // namespace

TEST(ExpertCounts, HandComputed) {
  const at::Tensor ids = at::tensor({0, 3, 3, 1, 3, 0}, at::kLong).view({3, 2});
  const at::Tensor counts = ops::expert_token_counts(ids, 5);
  EXPECT_TRUE(at::equal(counts, at::tensor({2, 1, 0, 3, 0}, at::kLong)));
}

TEST(ExpertCounts, AwkwardShapesAndDtypesMatchReference) {
  at::manual_seed(3);
  for (int64_t tokens : {0, 1, 19, 99, 989, 70001}) {
    for (int64_t experts : {1, 7, 256, 5000}) {
      for (auto dtype : {at::kLong, at::kInt}) {
        const at::Tensor ids = at::randint(experts, {tokens, 3}, at::TensorOptions(dtype));
        expect_matches_reference(ids, experts);
      }
    }
  }
  // Non-contiguous input.
  const at::Tensor wide = at::randint(16, {50, 8}, at::kLong);
  expect_matches_reference(wide.t(), 16);
}

TEST(ExpertCounts, OutOfRangeIdsAreNamed) {
  const at::Tensor ids = at::tensor({0, 7, 2}, at::kLong);
  try {
    ops::expert_token_counts(ids, 4);
    FAIL() << "expected an error";
  } catch (const c10::Error& e) {
    EXPECT_NE(std::string(e.what()).find("expert id 7 is outside [0, 4)"), std::string::npos) << e.what();
  }
  EXPECT_THROW(ops::expert_token_counts(at::tensor({-1}, at::kLong), 4), c10::Error);
  EXPECT_THROW(ops::expert_token_counts(at::tensor({0.5}), 4), c10::Error);
  EXPECT_THROW(ops::expert_token_counts(ids, 0), c10::Error);
}
