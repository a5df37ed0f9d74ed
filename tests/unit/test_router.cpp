// Router on hand-computed cases: group masking, bias changes the selection but not the weights,
// normalization and scaling.
#include <gtest/gtest.h>

#include <set>

#include "latentmoe/model/layer_registry.h"
#include "latentmoe/model/router.h"
#include "model_fixtures.h"

namespace model = latentmoe::model;

namespace {
// A router over 4 one-hot hidden dims whose logits equal the given per-expert values.
model::DeepSeekRouter router_with_logits(const std::vector<float>& logits, int64_t n_group, int64_t topk_group, int64_t top_k,
                                 bool normalize, double scaling, const std::string& scoring = "sigmoid") {
  latentmoe::config::ModelConfig cfg;
  const int64_t experts = static_cast<int64_t>(logits.size());
  cfg.hidden_size = 1;
  cfg.n_routed_experts = experts;
  auto& settings = model::deepseek_router_settings(cfg);
  settings.n_group = n_group;
  settings.topk_group = topk_group;
  cfg.num_experts_per_tok = top_k;
  cfg.norm_topk_prob = normalize;
  settings.routed_scaling_factor = scaling;
  settings.scoring_func = scoring;
  model::DeepSeekRouter r(model::DeepSeekRouterOptions::from_config(cfg));
  torch::NoGradGuard no_grad;
  r->weight.copy_(torch::tensor(logits).view({experts, 1}));
  return r;
}

std::set<int64_t> ids_of(const model::RouterOutput& out) {
  const torch::Tensor ids = out.expert_ids[0];
  return {ids.data_ptr<int64_t>(), ids.data_ptr<int64_t>() + ids.numel()};
}

const torch::Tensor kOneToken = torch::ones({1, 1});
}  // namespace

TEST(Router, GroupMaskingKeepsOnlyTheBestGroups) {
  // 4 groups of 2. Group sums of the top-2 sigmoid scores rank groups 1 and 3 highest although
  // expert 0 alone has the largest logit.
  auto r = router_with_logits({5.0, -5.0, 2.0, 2.0, -3.0, -3.0, 1.5, 1.5}, 4, 2, 2, true, 1.0);
  EXPECT_EQ(ids_of(r(kOneToken)), (std::set<int64_t>{2, 3}));
  // Without groups the plain top-2 wins.
  auto plain = router_with_logits({5.0, -5.0, 2.0, 2.0, -3.0, -3.0, 1.5, 1.5}, 1, 1, 2, true, 1.0);
  const auto ids = ids_of(plain(kOneToken));
  EXPECT_TRUE(ids.count(0) == 1 && ids.size() == 2);
}

TEST(Router, BiasChangesSelectionButNotWeights) {
  auto r = router_with_logits({1.0, 0.5, 0.0, -0.5}, 1, 1, 1, false, 1.0);
  auto before = r(kOneToken);
  EXPECT_EQ(ids_of(before), (std::set<int64_t>{0}));
  EXPECT_FLOAT_EQ(before.gate_weights.item<float>(), 1.0f / (1.0f + std::exp(-1.0f)));
  {
    torch::NoGradGuard no_grad;
    r->e_score_correction_bias.copy_(torch::tensor({0.0f, 0.0f, 0.0f, 0.5f}));
  }
  auto after = r(kOneToken);
  EXPECT_EQ(ids_of(after), (std::set<int64_t>{3})) << "sigmoid(-0.5)+0.5 > sigmoid(1)";
  EXPECT_FLOAT_EQ(after.gate_weights.item<float>(), 1.0f / (1.0f + std::exp(0.5f)))
      << "the gate weight is the unbiased score";
}

TEST(Router, NormalizationAndScaling) {
  auto r = router_with_logits({0.0, 1.0, 2.0, 3.0}, 1, 1, 2, true, 2.5);
  auto out = r(kOneToken);
  EXPECT_EQ(ids_of(out), (std::set<int64_t>{2, 3}));
  const double s2 = 1.0 / (1.0 + std::exp(-2.0)), s3 = 1.0 / (1.0 + std::exp(-3.0));
  const auto w = out.gate_weights[0];
  const auto pos3 = out.expert_ids[0][0].item<int64_t>() == 3 ? 0 : 1;
  EXPECT_NEAR(w[pos3].item<double>(), 2.5 * s3 / (s2 + s3), 1e-6);
  EXPECT_NEAR(w[1 - pos3].item<double>(), 2.5 * s2 / (s2 + s3), 1e-6);
  EXPECT_NEAR(out.gate_weights.sum().item<double>(), 2.5, 1e-6);
  // token_scores are the per-token normalized scores s' used by the balance loss.
  EXPECT_NEAR(out.token_scores.sum().item<double>(), 1.0, 1e-6);
}

TEST(Router, SoftmaxScoringAndCounts) {
  auto r = router_with_logits({0.0, 1.0, 2.0, 3.0}, 1, 1, 2, false, 1.0, "softmax");
  const torch::Tensor x = torch::ones({5, 1});
  auto out = r(x);
  const auto p = torch::softmax(torch::tensor({0.0, 1.0, 2.0, 3.0}), 0);
  EXPECT_NEAR(out.gate_weights.sum(-1)[0].item<double>(), (p[2] + p[3]).item<double>(), 1e-6);
  EXPECT_TRUE(torch::equal(out.expert_counts, torch::tensor({0, 0, 5, 5}, torch::kLong)));
}

TEST(Router, BiasReceivesNoGradientAndIsABuffer) {
  auto r = router_with_logits({0.0, 1.0, 2.0, 3.0}, 1, 1, 2, true, 1.0);
  auto out = r(torch::randn({4, 1}));
  out.gate_weights.sum().backward();
  EXPECT_TRUE(r->weight.grad().defined());
  EXPECT_FALSE(r->e_score_correction_bias.requires_grad());
  EXPECT_EQ(r->named_parameters().size(), 1u);
  EXPECT_EQ(r->named_buffers().size(), 1u);
}

// softmax_topk (Qwen3-MoE): softmax over all experts, plain top-k, the chosen probabilities as gate
// weights (renormalized only with norm_topk_prob); the bias moves the choice, not the weights.
TEST(Router, SoftmaxTopkIsAPlainTopKOfTheProbabilities) {
  latentmoe::config::ModelConfig cfg;
  cfg.hidden_size = 1;
  cfg.n_routed_experts = 4;
  cfg.num_experts_per_tok = 2;
  cfg.router.set_type("softmax_topk");
  const std::vector<float> logits{0.5f, 2.0f, -1.0f, 1.0f};
  const torch::Tensor probs = torch::softmax(torch::tensor(logits), 0);
  for (bool normalize : {false, true}) {
    cfg.norm_topk_prob = normalize;
    model::SoftmaxTopkRouter r(model::RouterOptions::from_config(cfg));
    torch::NoGradGuard no_grad;
    r->weight.copy_(torch::tensor(logits).view({4, 1}));
    const model::RouterOutput out = r(kOneToken);
    EXPECT_EQ(ids_of(out), (std::set<int64_t>{1, 3}));
    const double p1 = probs[1].item<double>(), p3 = probs[3].item<double>();
    const double sum = normalize ? p1 + p3 : 1.0;
    EXPECT_NEAR(out.gate_weights[0][0].item<double>(), p1 / sum, 1e-6);
    EXPECT_NEAR(out.gate_weights[0][1].item<double>(), p3 / sum, 1e-6);
    EXPECT_TRUE(torch::allclose(out.token_scores[0], probs));
    r->e_score_correction_bias.copy_(torch::tensor({1.0f, 0.0f, 0.0f, 0.0f}));
    const model::RouterOutput biased = r(kOneToken);
    EXPECT_EQ(ids_of(biased), (std::set<int64_t>{0, 1})) << "the bias steers the choice";
    const double p0 = probs[0].item<double>();  // chosen first: its biased score is the highest
    EXPECT_NEAR(biased.gate_weights[0][0].item<double>(), p0 / (normalize ? p0 + p1 : 1.0), 1e-6);
  }
}

// sinkhorn (the research example): when training, a gate that sends every token to the same
// experts is balanced to a near-equal load; evaluation picks the plain top-k; gate weights are the
// softmax probabilities either way, and the router weight gets gradients through them.
TEST(Router, SinkhornBalancesTheLoadOnlyWhenTraining) {
  latentmoe::config::ModelConfig cfg;
  cfg.hidden_size = 8;
  cfg.n_routed_experts = 4;
  cfg.num_experts_per_tok = 1;
  cfg.norm_topk_prob = false;
  cfg.router.set_type("sinkhorn");
  cfg.router.settings_base();  // defaults: 20 sweeps
  torch::manual_seed(5);
  model::Router r(model::make_router(cfg));
  auto* weight = r->named_parameters().find("weight");
  ASSERT_NE(weight, nullptr);
  {
    torch::NoGradGuard no_grad;
    weight->normal_(0.0, 0.3);
    (*weight)[0].add_(1.0);  // expert 0 is every token's favourite
  }
  const torch::Tensor x = torch::randn({64, 8}).abs();
  r->eval();
  const model::RouterOutput plain = r(x);
  EXPECT_GT(plain.expert_counts[0].item<int64_t>(), 48) << plain.expert_counts;
  r->train();
  const model::RouterOutput balanced = r(x);
  // The balanced matrix is fractional; its per-token top-1 lands near, not at, 16 per expert.
  EXPECT_LE(balanced.expert_counts.max().item<int64_t>(), 24) << balanced.expert_counts;
  EXPECT_EQ(balanced.expert_counts.sum().item<int64_t>(), 64);
  const torch::Tensor probs = torch::softmax(torch::linear(x, *weight), -1);
  EXPECT_TRUE(torch::allclose(balanced.gate_weights, probs.gather(1, balanced.expert_ids)));
  balanced.gate_weights.sum().backward();
  EXPECT_TRUE(weight->grad().defined());
  EXPECT_GT(weight->grad().abs().sum().item<double>(), 0.0);
}
