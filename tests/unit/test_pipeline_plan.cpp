// Pipeline stages: consecutive blocks covering the model once, the embedding first, the head and
// MTP modules last, their FLOPs summing to the model counter's, and the largest stage as small as
// any split can make it (checked against every split of small models).
#include <gtest/gtest.h>

#include <algorithm>
#include <functional>

#include "latentmoe/config/loader.h"
#include "latentmoe/model/param_count.h"
#include "latentmoe/parallel/pipeline_plan.h"
#include "latentmoe/util/error.h"
#include "model_fixtures.h"
#include "test_util.h"

namespace cfg = latentmoe::config;
using latentmoe::parallel::plan_pipeline_stages;
using latentmoe::testing::expect_error_contains;

namespace {
// The smallest largest-stage cost over every split into `stages` non-empty consecutive ranges.
double brute_force_best(const cfg::ModelConfig& m, int64_t seq, int64_t stages) {
  const int64_t layers = m.num_hidden_layers;
  const auto whole = latentmoe::model::forward_flops_per_token(m, seq);
  std::vector<double> block(static_cast<size_t>(layers));
  double blocks = 0;
  for (int64_t i = 0; i < layers; ++i) blocks += block[static_cast<size_t>(i)] = latentmoe::model::block_forward_flops_per_token(m, i, seq);
  const double tail = whole.forward - blocks + whole.mtp_forward;
  double best = 1e300;
  std::vector<int64_t> cuts;
  std::function<void(int64_t, int64_t)> recurse = [&](int64_t from, int64_t left) {
    if (left == 1) {
      double worst = 0, sum = 0;
      int64_t begin = 0;
      cuts.push_back(layers);
      for (size_t c = 0; c < cuts.size(); ++c) {
        sum = 0;
        for (int64_t i = begin; i < cuts[c]; ++i) sum += block[static_cast<size_t>(i)];
        if (c + 1 == cuts.size()) sum += tail;
        worst = std::max(worst, sum);
        begin = cuts[c];
      }
      cuts.pop_back();
      best = std::min(best, worst);
      return;
    }
    for (int64_t end = from + 1; end <= layers - (left - 1); ++end) {
      cuts.push_back(end);
      recurse(end, left - 1);
      cuts.pop_back();
    }
  };
  recurse(0, stages);
  return best;
}
}  // namespace

TEST(PipelinePlan, StagesCoverTheModelAndAreAsBalancedAsAnySplit) {
  cfg::ModelConfig m = latentmoe::testing::tiny_model_config();
  m.num_hidden_layers = 7;
  m.first_k_dense_replace = 2;
  for (int64_t stages = 1; stages <= 5; ++stages) {
    const auto plan = plan_pipeline_stages(m, 512, stages);
    ASSERT_EQ(static_cast<int64_t>(plan.size()), stages);
    int64_t next = 0;
    double worst = 0, sum = 0;
    for (size_t s = 0; s < plan.size(); ++s) {
      EXPECT_EQ(plan[s].first_layer, next);
      EXPECT_GE(plan[s].layer_count, 1);
      EXPECT_EQ(plan[s].embedding, s == 0);
      EXPECT_EQ(plan[s].head, s + 1 == plan.size());
      next += plan[s].layer_count;
      worst = std::max(worst, plan[s].forward_flops_per_token);
      sum += plan[s].forward_flops_per_token;
    }
    EXPECT_EQ(next, m.num_hidden_layers);
    const auto whole = latentmoe::model::forward_flops_per_token(m, 512);
    EXPECT_NEAR(sum, whole.forward + whole.mtp_forward, 1e-9 * sum);
    EXPECT_NEAR(worst, brute_force_best(m, 512, stages), 1e-9 * worst) << stages << " stages";
  }
}

TEST(PipelinePlan, DeepSeekV3OverSixteenStagesGivesTheLastStageFewerBlocks) {
  const cfg::ModelConfig v3 = cfg::load_config("deepseek-v3", {}).model;
  const auto plan = plan_pipeline_stages(v3, 4096, 16);
  ASSERT_EQ(plan.size(), 16u);
  // The head (2 x 129280 x 7168 per token) and the MTP module weigh about a block and a half.
  EXPECT_LT(plan.back().layer_count, plan[plan.size() / 2].layer_count);
  double lo = 1e300, hi = 0;
  for (const auto& s : plan) {
    lo = std::min(lo, s.forward_flops_per_token);
    hi = std::max(hi, s.forward_flops_per_token);
  }
  EXPECT_LT(hi / lo, 1.6) << "61 blocks of unequal cost over 16 stages: within one block of each other";
}

TEST(PipelinePlan, StagesThatCannotEachHoldABlockAreAnError) {
  const cfg::ModelConfig m = latentmoe::testing::tiny_model_config();
  expect_error_contains<latentmoe::ConfigError>([&] { plan_pipeline_stages(m, 128, 4); },
                                                {"4 pipeline stages cannot split model.num_hidden_layers (3) blocks",
                                                 "allowed: 1..3"});
  expect_error_contains<latentmoe::ConfigError>([&] { plan_pipeline_stages(m, 128, 0); }, {"allowed: 1..3"});
}
