// The closed-form counter equals the built model's tensors, and the presets give the public numbers.
#include <gtest/gtest.h>

#include "latentmoe/config/loader.h"
#include "latentmoe/model/deepseek_v3.h"
#include "latentmoe/model/param_count.h"
#include "model_fixtures.h"

namespace cfg = latentmoe::config;
namespace model = latentmoe::model;

namespace {
int64_t numel_with_prefix(model::DeepSeekV3& m, const std::string& prefix, bool with) {
  int64_t n = 0;
  for (const auto& p : m->named_parameters()) {
    if ((p.key().rfind(prefix, 0) == 0) == with) n += p.value().numel();
  }
  return n;
}

void expect_counts_match_modules(const cfg::ModelConfig& mc) {
  model::DeepSeekV3 m(mc);
  const model::ParameterCounts c = model::count_parameters(mc);
  EXPECT_EQ(numel_with_prefix(m, "mtp.", false), c.total);
  EXPECT_EQ(numel_with_prefix(m, "mtp.", true), c.mtp_total);
}
}  // namespace

TEST(ParamCount, MatchesTheBuiltModel) {
  cfg::ModelConfig mc = latentmoe::testing::tiny_model_config();
  expect_counts_match_modules(mc);
  latentmoe::model::mla_settings(mc).q_lora_rank.reset();
  mc.attention_bias = true;
  mc.num_nextn_predict_layers = 2;
  expect_counts_match_modules(mc);
  mc.n_routed_experts = 0;  // all dense
  expect_counts_match_modules(mc);
  expect_counts_match_modules(cfg::Config{}.model);
  cfg::ModelConfig qwen = latentmoe::testing::tiny_qwen3_moe_config();
  expect_counts_match_modules(qwen);
  qwen.attention_bias = true;
  latentmoe::model::gqa_settings(qwen).qk_norm = false;
  expect_counts_match_modules(qwen);
}

TEST(ParamCount, PresetsGiveThePublicNumbers) {
  const auto v3 = model::count_parameters(cfg::load_config("deepseek-v3", {}).model);
  EXPECT_NEAR(static_cast<double>(v3.total) / 1e9, 671.0, 0.1);
  EXPECT_NEAR(static_cast<double>(v3.activated) / 1e9, 37.0, 1.0);
  EXPECT_NEAR(static_cast<double>(v3.mtp_total) / 1e9, 11.6, 0.15);
  const auto lite = model::count_parameters(cfg::load_config("deepseek-v2-lite", {}).model);
  EXPECT_NEAR(static_cast<double>(lite.total) / 1e9, 15.7, 0.05);
  const auto small = model::count_parameters(cfg::load_config("small", {}).model);
  EXPECT_NEAR(static_cast<double>(small.total + small.mtp_total) / 1e6, 100.0, 10.0);
}

TEST(ParamCount, FlopsFollowTheFormula) {
  cfg::ModelConfig mc = latentmoe::testing::tiny_model_config();
  mc.num_nextn_predict_layers = 0;
  const auto c = model::count_parameters(mc);
  const auto f = model::forward_flops_per_token(mc, 9);
  // Matmul weights = activated minus the embedding and every norm weight (3 layers x 2 block
  // norms + q_a/kv_a norms, and the final norm).
  const int64_t norms = 3 * (2 * 32 + 24 + 12) + 32;
  EXPECT_DOUBLE_EQ(f.matmul, 2.0 * static_cast<double>(c.activated - c.embedding - norms));
  // Causal attention: heads x (qk + v dims) x mean context (9+1)/2 x 2 flops, per layer.
  EXPECT_DOUBLE_EQ(f.attention, 3 * 2.0 * 2 * 5.0 * (8 + 4 + 6));
  EXPECT_DOUBLE_EQ(f.mtp_forward, 0.0);
}
