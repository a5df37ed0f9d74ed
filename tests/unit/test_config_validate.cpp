// Validator: every preset is valid; each cross-field rule fires with the keys and values named.
#include <gtest/gtest.h>

#include "latentmoe/config/loader.h"
#include "latentmoe/config/validate.h"
#include "test_util.h"

using latentmoe::ConfigError;
using latentmoe::testing::expect_error_contains;
namespace cfg = latentmoe::config;

namespace {
// The violations of the default config after `overrides`, at `world` ranks.
std::string violations_after(std::initializer_list<const char*> overrides, int64_t world = 1) {
  cfg::Config c;
  for (const char* o : overrides) cfg::apply_override(c, o);
  std::string all;
  for (const auto& v : cfg::config_violations(c, world)) all += v + "\n";
  return all;
}

void expect_violation(std::initializer_list<const char*> overrides, std::initializer_list<std::string> fragments,
                      int64_t world = 1) {
  const std::string all = violations_after(overrides, world);
  EXPECT_FALSE(all.empty()) << "no rule fired";
  for (const auto& f : fragments) EXPECT_NE(all.find(f), std::string::npos) << "missing '" << f << "' in:\n" << all;
}
}  // namespace

TEST(ConfigValidate, DefaultsAndEveryPresetAreValid) {
  EXPECT_EQ(violations_after({}), "");
  const auto presets = cfg::preset_names();
  ASSERT_GE(presets.size(), 4u);
  for (const auto& name : presets) {
    const cfg::Config c = cfg::load_config(name, {});
    EXPECT_NO_THROW(cfg::validate_config(c, cfg::kUnknownWorldSize)) << name;
  }
}

TEST(ConfigValidate, DataKeysAreRangeChecked) {
  // fim_rate and num_workers used to be accepted and ignored; both work now (test_data Fim.*,
  // Prefetch.*, test_training.py), so only their ranges are checked.
  expect_violation({"data.num_workers=-1"}, {"data.num_workers must be in [0, 64]", "got -1"});
  expect_violation({"data.fim_rate=1.5"}, {"data.fim_rate must be in [0, 1], got 1.5"});
  expect_violation({"data.fim_spm_rate=-0.1"}, {"data.fim_spm_rate must be in [0, 1], got -0.1"});
}

TEST(ConfigValidate, DebugPresetEqualsTheDefaults) {
  EXPECT_EQ(cfg::load_config("debug", {}), cfg::Config{});
}

TEST(ConfigValidate, ExpertsMustDivideIntoGroups) {
  const cfg::Config v3 = cfg::load_config("deepseek-v3", {"model.n_routed_experts=255"});
  expect_error_contains<ConfigError>([&] { cfg::validate_config(v3, cfg::kUnknownWorldSize); },
                                     {"model.n_routed_experts (255) must be divisible by model.router.n_group (8)"});
}

TEST(ConfigValidate, TopKMustBeReachableWithinKeptGroups) {
  expect_violation({"model.num_experts_per_tok=5"},
                   {"model.num_experts_per_tok (5) is unreachable: model.router.topk_group (2) groups of "
                    "model.n_routed_experts/model.router.n_group (8/4 = 2) experts keep only 4"});
  expect_violation({"model.router.topk_group=5"}, {"model.router.topk_group (5) must be <= model.router.n_group (4)"});
  expect_violation({"model.num_experts_per_tok=9"}, {"model.num_experts_per_tok (9) must be in [1, model.n_routed_experts (8)]"});
  expect_violation({"model.router.n_group=8", "model.router.topk_group=4"},
                   {"model.n_routed_experts/model.router.n_group (8/8) must be >= 2 with model.router.scoring_func "
                    "'sigmoid'"});
  EXPECT_EQ(violations_after({"model.router.n_group=8", "model.router.topk_group=4",
                              "model.router.scoring_func=softmax"}),
            "");
}

TEST(ConfigValidate, DimensionsArePositive) {
  expect_violation({"model.attention.v_head_dim=0"}, {"model.attention.v_head_dim must be > 0, got 0"});
  expect_violation({"model.attention.qk_rope_head_dim=15"}, {"model.attention.qk_rope_head_dim must be even"});
  expect_violation({"model.attention.q_lora_rank=0"},
                   {"model.attention.q_lora_rank must be > 0 (use null for no query compression), got 0"});
  expect_violation({"model.attention.type=gqa", "model.attention.num_key_value_heads=3"},
                   {"model.attention.num_key_value_heads (3) must be > 0 and divide model.num_attention_heads (4)"});
  expect_violation({"model.attention.type=gqa", "model.attention.head_dim=7"},
                   {"model.attention.head_dim must be > 0 and even"});
  expect_violation({"model.hidden_size=-1"}, {"model.hidden_size must be > 0, got -1"});
  expect_violation({"model.ffn.moe_intermediate_size=0"}, {"model.ffn.moe_intermediate_size must be > 0, got 0"});
  expect_violation({"model.ffn.n_shared_experts=-1"}, {"model.ffn.n_shared_experts must be >= 0, got -1"});
  expect_violation({"model.first_k_dense_replace=4"},
                   {"model.first_k_dense_replace (4) must be <= model.num_hidden_layers (3)"});
  EXPECT_EQ(violations_after({"model.q_lora_rank=null"}), "");
}

TEST(ConfigValidate, BatchArithmetic) {
  expect_violation({"train.grad_accum_steps=3"},
                   {"train.global_batch_size (16) must equal train.micro_batch_size (8) x train.grad_accum_steps (3) x "
                    "data-parallel ranks (1) = 24"});
  EXPECT_EQ(violations_after({"train.grad_accum_steps=2"}), "");
  EXPECT_EQ(violations_after({"train.grad_accum_steps=1"}, 2), "");
  expect_violation({"train.micro_batch_size=3"},
                   {"train.global_batch_size (16) must be divisible by train.micro_batch_size (3) x data-parallel ranks (1)"});
  expect_violation({}, {"must be divisible by train.micro_batch_size (8) x data-parallel ranks (4) = 32"}, 4);
  expect_violation({"train.micro_batch_size=5"}, {"train.global_batch_size (16) must be divisible by train.micro_batch_size (5)"},
                   cfg::kUnknownWorldSize);
  expect_violation({"train.seq_len=8192"}, {"train.seq_len (8192) must be <= model.max_position_embeddings (4096)"});
}

TEST(ConfigValidate, ParallelLayout) {
  expect_violation({"parallel.ep=2"}, {"parallel.ep (2) must divide the world size (1 ranks)"});
  EXPECT_EQ(violations_after({"parallel.ep=2"}, 2), "");
  EXPECT_EQ(violations_after({"parallel.ep=2"}, cfg::kUnknownWorldSize), "");
  expect_violation({"parallel.ep=3"}, {"model.n_routed_experts (8) must be divisible by parallel.ep (3)"}, 3);
  expect_violation({"parallel.zero_stage=2"}, {"parallel.zero_stage must be 0 or 1, got 2"});
  expect_violation({"parallel.backend=nccl", "train.device=cpu"}, {"parallel.backend 'nccl' needs train.device"});
}

TEST(ConfigValidate, ScheduleAndOptimizer) {
  expect_violation({"schedule.min_lr=1.0"}, {"schedule.min_lr (1) must be <= optimizer.lr (0.003)"});
  expect_violation({"schedule.warmup=1000"}, {"schedule.warmup (1000 steps) must be <= train.steps (300)"});
  expect_violation({"optimizer.beta2=1.0"}, {"optimizer.beta2 must be in [0, 1), got 1"});
  expect_violation({"schedule.stepdown_at=[10]"},
                   {"schedule.stepdown_at (1 entries) and schedule.stepdown_lr (0 entries) must have the same length",
                    "only used with schedule.type 'multiphase'"});
  expect_violation({"schedule.type=multiphase", "schedule.decay_length=100", "schedule.stepdown_at=[50, 40]",
                    "schedule.stepdown_lr=[1e-4, 1e-5]"},
                   {"schedule.stepdown_at must be strictly increasing, got 50 then 40",
                    "schedule.stepdown_at[0] (50) must come after the cosine decay ends at schedule.decay_start + "
                    "schedule.decay_length = 100"});
}

TEST(ConfigValidate, YarnDataAndCheckpoint) {
  expect_violation({"model.rope_scaling.type=yarn", "model.rope_scaling.factor=0.5"},
                   {"model.rope_scaling.factor must be >= 1 with type 'yarn', got 0.5"});
  expect_violation({"model.rope_scaling.type=yarn", "model.rope_scaling.beta_fast=0.5"},
                   {"model.rope_scaling.beta_fast (0.5) must be > model.rope_scaling.beta_slow (1) > 0"});
  expect_violation({"data.paths=[a, b]", "data.weights=[1]"}, {"data.weights has 1 entries but data.paths has 2"});
  expect_violation({"data.valid_fraction=1.5"}, {"data.valid_fraction must be in [0, 1), got 1.5"});
  expect_violation({"checkpoint.keep_last=0"}, {"checkpoint.keep_last must be > 0, got 0"});
}

TEST(ConfigValidate, FloatsMustBeFinite) {
  expect_violation({"optimizer.lr=.inf"}, {"optimizer.lr must be a finite number, got inf"});
  expect_violation({"schedule.stepdown_lr=[.nan]"}, {"schedule.stepdown_lr must be a finite number, got nan"});
}

TEST(ConfigValidate, AllViolationsAreReportedTogether) {
  cfg::Config c;
  cfg::apply_override(c, "model.hidden_size=0");
  cfg::apply_override(c, "train.steps=0");
  expect_error_contains<ConfigError>([&] { cfg::validate_config(c, 1); },
                                     {"invalid configuration (", "model.hidden_size must be > 0", "exactly one of train.steps and train.tokens"});
}

TEST(ConfigValidate, Fp8AndBf16MomentKeysAreCrossChecked) {
  expect_violation({"precision.fp8_pow2_scales=true"}, {"precision.fp8_pow2_scales=true", "precision.fp8 is 'none'"});
  expect_violation({"optimizer.moments_dtype=bf16", "optimizer.beta2=0.999"},
                   {"optimizer.moments_dtype=bf16 needs 1 - optimizer.beta2 >= 2^-8", "optimizer.beta2=0.999"});
  EXPECT_EQ(violations_after({"optimizer.moments_dtype=bf16", "precision.fp8=blockwise", "precision.fp8_pow2_scales=true"}),
            "");
}
