// The DeepSeek-V3 recipe without training: the batch ramp against its formula over every step,
// token budgets, stage compatibility, the timeline of the three presets against the report's
// figures, and the errors for ramps that do not divide and for ambiguous run lengths.
#include <gtest/gtest.h>

#include <fstream>
#include <sstream>

#include "latentmoe/config/loader.h"
#include "latentmoe/config/validate.h"
#include "latentmoe/io/hf_config.h"
#include "latentmoe/train/batch_schedule.h"
#include "latentmoe/train/recipe.h"
#include "latentmoe/train/schedule.h"
#include "test_util.h"

namespace cfg = latentmoe::config;
namespace train = latentmoe::train;

namespace {
// The ramp as the issue states it, written independently of BatchSchedule.
int64_t ramp_formula(int64_t tokens, int64_t start, int64_t increment, int64_t ramp_tokens, int64_t global) {
  if (tokens >= ramp_tokens) return global;
  const int64_t increments = (global - start + increment - 1) / increment;
  const int64_t k = static_cast<int64_t>(static_cast<__int128>(tokens) * increments / ramp_tokens);
  return std::min(global, start + k * increment);
}

std::string violations(const cfg::Config& c, int64_t world) {
  std::string all;
  for (const auto& v : cfg::config_violations(c, world)) all += v + "\n";
  return all;
}

constexpr double kT = 1e12, kB = 1e9;
}  // namespace

TEST(BatchRamp, EveryStepMatchesTheFormulaIncludingTheLastPartialIncrement) {
  cfg::TrainConfig t;
  t.steps = 400;
  t.global_batch_size = 32;
  t.seq_len = 16;
  t.batch_ramp = {.start = 6, .increment = 4, .tokens = 10000};  // 6, 10, ..., 30, then a partial +2 to 32
  const train::BatchSchedule s(t);
  int64_t tokens = 0;
  std::set<int64_t> used;
  for (int64_t step = 0; step < t.steps; ++step) {
    const int64_t expected = ramp_formula(tokens, 6, 4, 10000, 32);
    ASSERT_EQ(s.global_batch(tokens), expected) << "step " << step;
    ASSERT_EQ(s.tokens_after(step), tokens) << "step " << step;
    ASSERT_EQ(s.steps_to_reach(tokens), step) << "step " << step;
    used.insert(expected);
    tokens += expected * t.seq_len;
  }
  EXPECT_EQ(s.tokens_after(t.steps), tokens);
  EXPECT_EQ(s.total_steps(), 400);
  EXPECT_EQ(s.total_tokens(), tokens);
  const std::vector<int64_t> values{6, 10, 14, 18, 22, 26, 30, 32};
  EXPECT_EQ(s.batch_values(), values);
  EXPECT_EQ(used, std::set<int64_t>(values.begin(), values.end()));  // every increment, the partial one too
  // Before the ramp's end the batch is below the global batch, after it equal.
  const int64_t end_step = s.steps_to_reach(10000);
  EXPECT_LT(s.global_batch(s.tokens_after(end_step - 1)), 32);
  EXPECT_EQ(s.global_batch(s.tokens_after(end_step)), 32);
}

TEST(BatchRamp, TokenBudgetEndsAtTheFirstStepThatReachesIt) {
  cfg::TrainConfig t;
  t.steps = 0;
  t.tokens = 100000;
  t.global_batch_size = 32;
  t.seq_len = 16;
  t.batch_ramp = {.start = 8, .increment = 8, .tokens = 20000};
  const train::BatchSchedule s(t);
  EXPECT_TRUE(s.sized_by_tokens());
  EXPECT_GE(s.total_tokens(), 100000);
  EXPECT_LT(s.tokens_after(s.total_steps() - 1), 100000);
  t.batch_ramp = {};
  const train::BatchSchedule flat(t);
  EXPECT_EQ(flat.total_steps(), (100000 + 511) / 512);  // 512 tokens per step
}

TEST(BatchRamp, ValuesThatDoNotSplitAreNamedAtConfigTime) {
  cfg::Config c;
  c.train.global_batch_size = 64;
  c.train.micro_batch_size = 4;
  c.train.batch_ramp = {.start = 16, .increment = 8, .tokens = 1 << 20};
  EXPECT_EQ(violations(c, 2), "");  // 16, 24, ..., 56, 64 all split over 2 ranks x 4
  const std::string three = violations(c, 4);  // 24 is not a multiple of 16
  EXPECT_NE(three.find("the global batch 24 (start 16 + 1 x increment 8) is not divisible by train.micro_batch_size (4) "
                       "x data-parallel ranks (4) = 16"), std::string::npos) << three;
  EXPECT_NE(three.find("allowed: multiples of 16"), std::string::npos) << three;
  c.train.grad_accum_steps = 2;
  EXPECT_NE(violations(c, 2).find("train.grad_accum_steps (2) must be 0 with a batch ramp"), std::string::npos);
  c.train.grad_accum_steps = 0;
  c.train.batch_ramp.start = 64;
  EXPECT_NE(violations(c, 2).find("train.batch_ramp.start (64) must be in [1, train.global_batch_size (64))"),
            std::string::npos);
  c.train.batch_ramp = {.start = 0, .increment = 8, .tokens = 0};
  EXPECT_NE(violations(c, 2).find("train.batch_ramp.start is 0 (no ramp)"), std::string::npos);
}

TEST(BatchRamp, ARampThatNeverEndsOrOverflowsIsRefused) {
  cfg::Config c;
  c.train.global_batch_size = 64;
  c.train.micro_batch_size = 4;
  c.train.steps = 10;
  c.train.seq_len = 16;
  c.train.batch_ramp = {.start = 16, .increment = 8, .tokens = 1 << 20};  // 10 steps are ~10K tokens
  EXPECT_NE(violations(c, 1).find("train.batch_ramp.tokens (1048576) must be below the run's"), std::string::npos);
  c.train.batch_ramp = {};
  c.train.steps = int64_t{1} << 55;  // x 64 x 16 = 2^65 tokens
  EXPECT_NE(violations(c, 1).find("the run is too long to count its tokens"), std::string::npos);
}

TEST(Recipe, DeepSeekPresetsValidateAtTheirWorldSizes) {
  // Pre-training and the 32K stage at DP 128 (the ramp's values and 1920 split over 128 ranks); the
  // 128K stage's 480 sequences need a world size that divides 480 and EP 32.
  EXPECT_EQ(violations(cfg::load_config("deepseek-v3", {}), 128), "");
  EXPECT_EQ(violations(cfg::load_config("deepseek-v3-ext-32k", {}), 128), "");
  EXPECT_EQ(violations(cfg::load_config("deepseek-v3-ext-128k", {}), 96), "");
  EXPECT_NE(violations(cfg::load_config("deepseek-v3", {}), 2048).find("train.batch_ramp: the global batch"),
            std::string::npos);  // 2048 ranks without pipeline parallelism: 3072 does not split
}

TEST(RunLength, ExactlyOneOfStepsAndTokens) {
  cfg::Config c;
  c.train.tokens = 1000;  // steps is 300 by default: both
  const std::string both = violations(c, 1);
  EXPECT_NE(both.find("exactly one of train.steps and train.tokens must be > 0 (the run is sized in steps or in "
                      "tokens), got train.steps=300 and train.tokens=1000"), std::string::npos) << both;
  c.train.steps = 0;
  c.train.tokens = 0;
  EXPECT_NE(violations(c, 1).find("got train.steps=0 and train.tokens=0"), std::string::npos);
  // Giving one of them in a layer clears the other's inherited value.
  cfg::Config o;
  cfg::apply_override(o, "train.tokens=204800");  // 100 steps of 16 x 128
  EXPECT_EQ(o.train.steps, 0);
  EXPECT_EQ(violations(o, 1), "");
  cfg::apply_override(o, "train.steps=7");
  EXPECT_EQ(o.train.tokens, 0);
  latentmoe::testing::TempDir dir;
  const cfg::Config f = cfg::load_config_file(dir.write("t.yaml", "train:\n  tokens: 4096\n"));
  EXPECT_EQ(f.train.steps, 0);
  EXPECT_EQ(f.train.tokens, 4096);
  const cfg::Config both_in_file = cfg::load_config_file(dir.write("b.yaml", "train:\n  tokens: 4096\n  steps: 3\n"));
  EXPECT_NE(violations(both_in_file, 1).find("exactly one of train.steps and train.tokens"), std::string::npos);
}

TEST(Recipe, StagesMayChangeOnlyTheContextExtension) {
  const cfg::Config pre = cfg::load_config("deepseek-v3", {});
  const cfg::Config ext = cfg::load_config("deepseek-v3-ext-32k", {});
  EXPECT_TRUE(train::stage_incompatible_model_keys(pre.model, ext.model).empty());
  cfg::Config other = ext;
  other.model.hidden_size = 4096;
  other.model.n_routed_experts = 128;
  const auto differing = train::stage_incompatible_model_keys(pre.model, other.model);
  ASSERT_EQ(differing.size(), 2u);
  EXPECT_EQ(differing[0], "model.hidden_size (7168 in the checkpoint, 4096 in the config)");
  EXPECT_EQ(differing[1], "model.n_routed_experts (256 in the checkpoint, 128 in the config)");
  EXPECT_THROW(train::build_timeline({pre, other}), latentmoe::ConfigError);
}

TEST(Recipe, TheReleasedArchitectureIsTheLastStage) {
  std::ifstream in(LATENTMOE_SOURCE_DIR "/tests/fuzz/corpus/fuzz_hf_config/deepseek-v3.json");
  std::stringstream text;
  text << in.rdbuf();
  cfg::Config released, last;
  released.model = latentmoe::io::parse_hf_config(text.str(), "deepseek-v3 config.json").model;
  last.model = cfg::load_config("deepseek-v3-ext-128k", {}).model;
  EXPECT_EQ(cfg::config_key_values(released), cfg::config_key_values(last));
}

TEST(Recipe, DeepSeekV3TimelineReproducesTheReport) {
  const train::Timeline t = train::build_timeline({cfg::load_config("deepseek-v3", {}),
                                                   cfg::load_config("deepseek-v3-ext-32k", {}),
                                                   cfg::load_config("deepseek-v3-ext-128k", {})});
  const int64_t full_step_tokens = 15360 * 4096;
  ASSERT_EQ(t.stage_tokens.size(), 3u);
  EXPECT_GE(t.stage_tokens[0], static_cast<int64_t>(14.8 * kT));  // 14.8T pre-training tokens, within one step
  EXPECT_LT(t.stage_tokens[0], static_cast<int64_t>(14.8 * kT) + full_step_tokens);
  for (size_t s : {1, 2}) {  // each extension: 1000 steps x 62.9B tokens
    EXPECT_EQ(t.stage_steps[s], 1000);
    EXPECT_EQ(t.stage_tokens[s], 1000 * int64_t{62914560});
  }
  // The phase in which the token count `at` falls (recipe tokens).
  const auto phase_at = [&](double at) -> const train::TimelinePhase& {
    for (const auto& p : t.phases) {
      if (static_cast<double>(p.first_token) <= at && at < static_cast<double>(p.end_token)) return p;
    }
    ADD_FAILURE() << "no phase at " << at;
    return t.phases.front();
  };
  const auto near = [&](int64_t tokens, double expected) {  // a boundary lands within one step of its token count
    return static_cast<double>(tokens) >= expected && static_cast<double>(tokens) < expected + full_step_tokens;
  };
  // Batch 15360 reached at 469B tokens: the ramp's phases end there, the full batch starts there.
  const auto& full = phase_at(469 * kB + full_step_tokens);
  EXPECT_TRUE(near(full.first_token, 469 * kB)) << full.first_token;
  EXPECT_EQ(full.batch_first, 15360);
  EXPECT_EQ(phase_at(0).batch_first, 3072);
  EXPECT_LT(phase_at(469 * kB - 1).batch_last, 15360);
  // LR 2.2e-4 constant to 10T (after the 2K-step warmup), lambda 0.3 and gamma 0.001.
  const auto& constant = phase_at(5 * kT);
  EXPECT_DOUBLE_EQ(constant.lr_first, 2.2e-4);
  EXPECT_DOUBLE_EQ(constant.lr_last, 2.2e-4);
  EXPECT_TRUE(near(constant.end_token, 10 * kT)) << constant.end_token;
  EXPECT_EQ(phase_at(0).end_step, 2000);
  EXPECT_DOUBLE_EQ(constant.mtp_lambda, 0.3);
  EXPECT_DOUBLE_EQ(constant.gamma, 0.001);
  // Cosine to 2.2e-5 over 4.3T; lambda 0.1 from 10T.
  const auto& cosine = phase_at(12 * kT);
  EXPECT_TRUE(near(cosine.first_token, 10 * kT));
  EXPECT_TRUE(near(cosine.end_token, 14.3 * kT));
  EXPECT_NEAR(cosine.lr_first, 2.2e-4, 1e-9);
  EXPECT_NEAR(cosine.lr_last, 2.2e-5, 1e-9);
  EXPECT_DOUBLE_EQ(cosine.mtp_lambda, 0.1);
  EXPECT_DOUBLE_EQ(cosine.gamma, 0.001);
  // 2.2e-5 for 333B with gamma frozen from 14.3T; 7.3e-6 for the last 167B.
  const auto& min_lr = phase_at(14.5 * kT);
  EXPECT_TRUE(near(min_lr.first_token, 14.3 * kT));
  EXPECT_TRUE(near(min_lr.end_token, 14.633 * kT));
  EXPECT_DOUBLE_EQ(min_lr.lr_first, 2.2e-5);
  EXPECT_DOUBLE_EQ(min_lr.gamma, 0.0);
  const auto& last = phase_at(14.7 * kT);
  EXPECT_TRUE(near(last.first_token, 14.633 * kT));
  EXPECT_EQ(last.end_token, t.stage_tokens[0]);
  EXPECT_DOUBLE_EQ(last.lr_first, 7.3e-6);
  // The extension stages: 32K x 1920 then 128K x 480, LR 7.3e-6, YaRN s = 40.
  const auto& ext32 = phase_at(static_cast<double>(t.stage_tokens[0]) + 1);
  EXPECT_EQ(ext32.seq_len, 32768);
  EXPECT_EQ(ext32.batch_first, 1920);
  EXPECT_DOUBLE_EQ(ext32.lr_first, 7.3e-6);
  EXPECT_EQ(ext32.rotary, "yarn x40 from 4096");
  const auto& ext128 = phase_at(static_cast<double>(t.stage_tokens[0] + t.stage_tokens[1]) + 1);
  EXPECT_EQ(ext128.seq_len, 131072);
  EXPECT_EQ(ext128.batch_first, 480);
  EXPECT_EQ(phase_at(1).rotary, "plain");
  const std::string table = train::timeline_table(t);
  EXPECT_NE(table.find("stage 1 'deepseek-v3': "), std::string::npos) << table;
  EXPECT_NE(table.find("14.8T tokens"), std::string::npos) << table;
}
