// Loader: types, unknown keys with did-you-mean, duplicates, file:line, JSON, --set overrides.
#include <gtest/gtest.h>

#include "latentmoe/config/loader.h"
#include "latentmoe/model/attention_settings.h"
#include "latentmoe/model/moe_settings.h"
#include "latentmoe/model/router_settings.h"
#include "latentmoe/io/hf_config.h"
#include "test_util.h"

using latentmoe::ConfigError;
using latentmoe::testing::expect_error_contains;
using latentmoe::testing::TempDir;
namespace cfg = latentmoe::config;

TEST(ConfigLoader, EmptyFileIsAnError) {  // it used to be silently the debug preset
  TempDir dir;
  expect_error_contains<ConfigError>([&] { cfg::load_config_file(dir.write("empty.yaml", "")); },
                                     {"empty.yaml", "the config is empty", "--config debug"});
  expect_error_contains<ConfigError>([&] { cfg::load_config_file(dir.write("comments.yaml", "# nothing\n")); },
                                     {"the config is empty"});
}

TEST(ConfigLoader, ReadsNestedValuesOfEveryType) {
  TempDir dir;
  const auto path = dir.write("c.yaml",
                              "name: demo\n"
                              "model:\n"
                              "  hidden_size: 256\n"
                              "  attention:\n"
                              "    q_lora_rank: null\n"
                              "  router:\n"
                              "    routed_scaling_factor: 1\n"
                              "    scoring_func: softmax\n"
                              "  norm_topk_prob: false\n"
                              "  rope_scaling:\n"
                              "    type: yarn\n"
                              "    factor: 40\n"
                              "schedule:\n"
                              "  stepdown_at: [10, 20]\n"
                              "  stepdown_lr: [1.0e-5, 2e-6]\n"
                              "data:\n"
                              "  paths: [a/b, 'c d']\n");
  const cfg::Config c = cfg::load_config_file(path);
  EXPECT_EQ(c.name, "demo");
  EXPECT_EQ(c.model.hidden_size, 256);
  EXPECT_FALSE(latentmoe::model::mla_settings(c.model).q_lora_rank.has_value());
  EXPECT_DOUBLE_EQ(latentmoe::model::deepseek_router_settings(c.model).routed_scaling_factor, 1.0);
  EXPECT_FALSE(c.model.norm_topk_prob);
  EXPECT_EQ(latentmoe::model::deepseek_router_settings(c.model).scoring_func, "softmax");
  EXPECT_EQ(c.model.rope_scaling.type, "yarn");
  EXPECT_DOUBLE_EQ(c.model.rope_scaling.factor, 40.0);
  EXPECT_EQ(c.schedule.stepdown_at, (std::vector<int64_t>{10, 20}));
  EXPECT_EQ(c.schedule.stepdown_lr, (std::vector<double>{1e-5, 2e-6}));
  EXPECT_EQ(c.data.paths, (std::vector<std::string>{"a/b", "c d"}));
  EXPECT_EQ(c.model.vocab_size, cfg::Config{}.model.vocab_size) << "unset keys keep their defaults";
}

TEST(ConfigLoader, UnknownKeyNamesFileLineAndSuggests) {
  TempDir dir;
  const auto path = dir.write("typo.yaml", "model:\n  hidden_size: 64\n  n_routed_expert: 4\n");
  expect_error_contains<ConfigError>([&] { cfg::load_config_file(path); },
                                     {"unknown key 'model.n_routed_expert' at " + path + ":3",
                                      "(did you mean 'n_routed_experts'?)"});
}

TEST(ConfigLoader, UnknownSectionAndFarOffKey) {
  TempDir dir;
  const auto path = dir.write("bad.yaml", "modle:\n  hidden_size: 64\ntrain:\n  zzzzzz: 1\n");
  expect_error_contains<ConfigError>([&] { cfg::load_config_file(path); },
                                     {"2 errors", "unknown key 'modle' at " + path + ":1 (did you mean 'model'?)",
                                      "unknown key 'train.zzzzzz' at " + path + ":4; allowed keys in 'train'"});
}

TEST(ConfigLoader, WrongTypeNamesKeyPathValueAndExpectedType) {
  TempDir dir;
  expect_error_contains<ConfigError>(
      [&] { cfg::load_config_file(dir.write("t.yaml", "model:\n  hidden_size: wide\n")); },
      {"'model.hidden_size' expects int, got string 'wide'", "t.yaml:2"});
  expect_error_contains<ConfigError>(
      [&] { cfg::load_config_file(dir.write("q.yaml", "model:\n  hidden_size: \"128\"\n")); },
      {"'model.hidden_size' expects int, got string '128'"});
  expect_error_contains<ConfigError>([&] { cfg::load_config_file(dir.write("f.yaml", "train:\n  steps: 1.5\n")); },
                                     {"'train.steps' expects int, got float 1.5"});
  expect_error_contains<ConfigError>(
      [&] { cfg::load_config_file(dir.write("b.yaml", "model:\n  norm_topk_prob: 3\n")); },
      {"'model.norm_topk_prob' expects bool, got int 3"});
  expect_error_contains<ConfigError>(
      [&] { cfg::load_config_file(dir.write("l.yaml", "schedule:\n  stepdown_at: [1, x]\n")); },
      {"'schedule.stepdown_at' expects list of int, got a list"});
  expect_error_contains<ConfigError>([&] { cfg::load_config_file(dir.write("s.yaml", "model: 5\n")); },
                                     {"'model' must be a mapping of keys, got int 5"});
  expect_error_contains<ConfigError>([&] { cfg::load_config_file(dir.write("n.yaml", "model:\n  hidden_size: null\n")); },
                                     {"'model.hidden_size' expects int, got null"});
}

TEST(ConfigLoader, ChoiceFieldsListAllowedValues) {
  TempDir dir;
  expect_error_contains<ConfigError>(
      [&] { cfg::load_config_file(dir.write("c.yaml", "model:\n  router:\n    scoring_func: sigmod\n")); },
      {"'model.router.scoring_func' must be one of 'sigmoid', 'softmax', got 'sigmod'", "(did you mean 'sigmoid'?)"});
}

TEST(ConfigLoader, DuplicateKeysAreRejected) {
  TempDir dir;
  const auto path = dir.write("dup.yaml", "model:\n  hidden_size: 64\n  hidden_size: 128\n");
  expect_error_contains<ConfigError>([&] { cfg::load_config_file(path); },
                                     {"duplicate key 'model.hidden_size' at " + path + ":3 (first defined at line 2)"});
}

TEST(ConfigLoader, JsonSharesTheSchemaAndLineNumbers) {
  TempDir dir;
  const auto ok =
      dir.write("ok.json", "{\n  \"model\": {\"hidden_size\": 96, \"attention\": {\"q_lora_rank\": null}},\n  \"seed\": 7\n}\n");
  const cfg::Config c = cfg::load_config_file(ok);
  EXPECT_EQ(c.model.hidden_size, 96);
  EXPECT_FALSE(latentmoe::model::mla_settings(c.model).q_lora_rank);
  EXPECT_EQ(c.seed, 7);
  const auto bad = dir.write("bad.json", "{\n  \"model\": {\n    \"router\": {\"n_group\": \"8\"}\n  }\n}\n");
  expect_error_contains<ConfigError>([&] { cfg::load_config_file(bad); },
                                     {"'model.router.n_group' expects int, got string '8' at " + bad + ":3"});
  const auto dup = dir.write("dup.json", "{\"seed\": 1,\n \"seed\": 2}\n");
  expect_error_contains<ConfigError>([&] { cfg::load_config_file(dup); }, {"duplicate key 'seed'"});
}

TEST(ConfigLoader, SyntaxErrorsAndBadFiles) {
  TempDir dir;
  expect_error_contains<ConfigError>(
      [&] { cfg::load_config_file(dir.write("s.yaml", "model:\n  hidden_size: [1, 2\n")); }, {"s.yaml:", "YAML syntax error"});
  expect_error_contains<ConfigError>([&] { cfg::load_config_file(dir.write("s.json", "{\"seed\": 1,\n \"model\": {\"hidden_size\": 2}")); },
                                     {"JSON syntax error"});
  expect_error_contains<ConfigError>([&] { cfg::load_config_file((dir.path() / "missing.yaml").string()); },
                                     {"missing.yaml: cannot open config file"});
  expect_error_contains<ConfigError>([&] { cfg::load_config_file(dir.write("c.toml", "")); },
                                     {"unsupported config file extension '.toml'"});
  expect_error_contains<ConfigError>([&] { cfg::resolve_config_path("no-such-preset"); },
                                     {"'no-such-preset': no such file, and not a preset name", "debug", "deepseek-v3"});
}

TEST(ConfigOverride, SetsScalarsListsAndNull) {
  cfg::Config c;
  cfg::apply_override(c, "model.hidden_size=256");
  cfg::apply_override(c, "model.q_lora_rank=null");
  cfg::apply_override(c, "model.rope_scaling.factor=4");
  cfg::apply_override(c, "data.paths=[x, y]");
  cfg::apply_override(c, "name=has spaces");
  EXPECT_EQ(c.model.hidden_size, 256);
  EXPECT_FALSE(latentmoe::model::mla_settings(c.model).q_lora_rank);  // the key from before model.attention
  EXPECT_DOUBLE_EQ(c.model.rope_scaling.factor, 4.0);
  EXPECT_EQ(c.data.paths, (std::vector<std::string>{"x", "y"}));
  EXPECT_EQ(c.name, "has spaces");
  cfg::apply_override(c, "model.rope_scaling={type: yarn, factor: 8}");
  EXPECT_EQ(c.model.rope_scaling.type, "yarn");
  EXPECT_DOUBLE_EQ(c.model.rope_scaling.factor, 8.0);
}

TEST(ConfigOverride, ErrorsNameTheOverride) {
  cfg::Config c;
  expect_error_contains<ConfigError>([&] { cfg::apply_override(c, "model.n_routed_expert=4"); },
                                     {"unknown key 'model.n_routed_expert' at --set model.n_routed_expert=4",
                                      "did you mean 'n_routed_experts'"});
  expect_error_contains<ConfigError>([&] { cfg::apply_override(c, "train.steps=many"); },
                                     {"'train.steps' expects int, got string 'many' at --set train.steps=many"});
  expect_error_contains<ConfigError>([&] { cfg::apply_override(c, "train.steps"); }, {"expected KEY=VALUE"});
  expect_error_contains<ConfigError>([&] { cfg::apply_override(c, "model..x=1"); }, {"empty component"});
  expect_error_contains<ConfigError>([&] { cfg::apply_override(c, "model.hidden_size.x=1"); },
                                     {"'model.hidden_size' is a value (int), not a section"});
  expect_error_contains<ConfigError>([&] { cfg::apply_override(c, "model=3"); }, {"'model' must be a mapping"});
  expect_error_contains<ConfigError>([&] { cfg::apply_override(c, "model.rope_scaling={type: yarn, factor: big}"); },
                                     {"'model.rope_scaling.factor' expects float, got string 'big'"});
  EXPECT_EQ(c, cfg::Config{}) << "failed overrides leave the config untouched";
}

TEST(ConfigLoader, ClosestMatch) {
  EXPECT_EQ(cfg::closest_match("n_routed_expert", {"n_group", "n_routed_experts"}), "n_routed_experts");
  EXPECT_EQ(cfg::closest_match("hiden_size", {"hidden_size", "vocab_size"}), "hidden_size");
  EXPECT_EQ(cfg::closest_match("zzzz", {"hidden_size", "vocab_size"}), "");
}

// Found by fuzz_config (tests/fuzz/corpus/fuzz_config/regression-*).
TEST(ConfigLoader, NonScalarKeysAndUnprintableStringsAreConfigErrors) {
  using latentmoe::config::load_config_text;
  expect_error_contains<latentmoe::ConfigError>([] { load_config_text("{model: {hidden_size: 8}, [a, b]: 1}\n", "f.yaml"); },
                                                {"f.yaml:1", "a key in '<top level>' is", "keys must be plain names"});
  expect_error_contains<latentmoe::ConfigError>([] { load_config_text("checkpoint:\n  dir: \"runs/\\fx\"\n", "f.yaml"); },
                                                {"'checkpoint.dir' contains the control character 0x0c at offset 5",
                                                 "printable UTF-8", "f.yaml:2"});
  expect_error_contains<latentmoe::ConfigError>([] { load_config_text("name: \"a\xff\"\n", "f.yaml"); },
                                                {"'name' is not valid UTF-8 (byte 0xff at offset 1)"});
  expect_error_contains<latentmoe::ConfigError>([] { load_config_text("data:\n  paths: [ok, \"b\\tc\"]\n", "f.yaml"); },
                                                {"'data.paths' item 1 contains the control character 0x09"});
}

// HF config.json values must be exact: nlohmann would turn 3.5 into 3 and 2^64-1 into -1.
TEST(HfConfig, IntegersAreExactAndBlockSizesChecked) {
  using latentmoe::io::parse_hf_config;
  const std::string base = R"({"model_type": "deepseek_v3", "vocab_size": 64, "hidden_size": 32, "intermediate_size": 64,
    "moe_intermediate_size": 16, "num_attention_heads": 2, "kv_lora_rank": 8, "qk_nope_head_dim": 8,
    "qk_rope_head_dim": 4, "v_head_dim": 8, )";
  const auto cfg = parse_hf_config(base + R"("num_hidden_layers": 2, "quantization_config": {"weight_block_size": [64, 32]}})", "c.json");
  EXPECT_EQ(cfg.model.num_hidden_layers, 2);
  EXPECT_EQ(cfg.fp8_block_rows, 64);
  EXPECT_EQ(cfg.fp8_block_cols, 32);
  expect_error_contains<latentmoe::ConfigError>([&] { parse_hf_config(base + R"("num_hidden_layers": 3.5})", "c.json"); },
                                                {"c.json: key 'num_hidden_layers' must be an integer, got 3.5"});
  expect_error_contains<latentmoe::ConfigError>(
      [&] { parse_hf_config(base + R"("num_hidden_layers": 18446744073709551615})", "c.json"); },
      {"'num_hidden_layers' must be an integer, got 18446744073709551615"});
  expect_error_contains<latentmoe::ConfigError>(
      [&] { parse_hf_config(base + R"("num_hidden_layers": 2, "quantization_config": {"weight_block_size": [0, 128]}})", "c.json"); },
      {"weight_block_size must be two positive integers, got [0,128]"});
  expect_error_contains<latentmoe::ConfigError>([&] { parse_hf_config("[1, 2]", "c.json"); }, {"c.json: must be a JSON object"});
}

// model.attention / model.router / model.ffn: the type decides which keys exist, wherever `type` is written;
// typos get did-you-mean per type; keys from before the sections (checkpoints' config.yaml) load.
TEST(ConfigLoader, LayerTypeSectionsHaveTheirTypesKeys) {
  TempDir dir;
  const auto gqa = dir.write("gqa.yaml", "model:\n  attention:\n    head_dim: 16\n    type: gqa\n    qk_norm: false\n");
  const cfg::Config c = cfg::load_config_file(gqa);
  EXPECT_EQ(c.model.attention.type(), "gqa");
  EXPECT_EQ(latentmoe::model::gqa_settings(c.model).head_dim, 16);
  EXPECT_FALSE(latentmoe::model::gqa_settings(c.model).qk_norm);
  const auto mla_key = dir.write("m.yaml", "model:\n  attention:\n    type: gqa\n    kv_lora_rank: 16\n");
  expect_error_contains<ConfigError>([&] { cfg::load_config_file(mla_key); },
                                     {"unknown key 'model.attention.kv_lora_rank' at " + mla_key + ":4",
                                      "it is a key of model.attention.type 'mla' (this section's type is 'gqa'"});
  cfg::Config untyped;
  expect_error_contains<ConfigError>([&] { cfg::apply_override(untyped, "model.attention.head_dim=16"); },
                                     {"unknown key 'model.attention.head_dim'",
                                      "it is a key of model.attention.type 'gqa' (this section's type is 'mla': set "
                                      "model.attention.type first)"});
  cfg::Config gqa_set;
  cfg::apply_override(gqa_set, "model.attention.type=gqa");
  expect_error_contains<ConfigError>([&] { cfg::apply_override(gqa_set, "model.kv_lora_rank=16"); },
                                     {"'model.kv_lora_rank' (now 'model.attention.kv_lora_rank') is not a key of "
                                      "model.attention.type 'gqa'"});
  const auto typo = dir.write("t.yaml", "model:\n  attention:\n    type: gqa\n    num_key_value_head: 2\n");
  expect_error_contains<ConfigError>([&] { cfg::load_config_file(typo); },
                                     {"unknown key 'model.attention.num_key_value_head' at " + typo + ":4",
                                      "(did you mean 'num_key_value_heads'?)"});
  const auto bad_type = dir.write("b.yaml", "model:\n  router:\n    type: softmax_top_k\n");
  expect_error_contains<ConfigError>([&] { cfg::load_config_file(bad_type); },
                                     {"'model.router.type' must be one of", "(did you mean 'softmax_topk'?)"});
  const auto bad_type_keys = dir.write("bk.yaml", "model:\n  router:\n    type: nope\n    n_group: 2\n");
  try {
    cfg::load_config_file(bad_type_keys);
    FAIL() << "expected an error";
  } catch (const ConfigError& e) {
    EXPECT_EQ(std::string(e.what()).find("n_group"), std::string::npos) << "no cascade after a bad type: " << e.what();
  }

  const auto ffn_typo = dir.write("f.yaml", "model:\n  ffn:\n    type: deepseek_moe\n    moe_intermediat_size: 8\n");
  expect_error_contains<ConfigError>([&] { cfg::load_config_file(ffn_typo); },
                                     {"unknown key 'model.ffn.moe_intermediat_size' at " + ffn_typo + ":4",
                                      "(did you mean 'moe_intermediate_size'?)"});
  const auto ffn_keys = dir.write("fk.yaml", "model:\n  ffn:\n    n_shared_experts: 2\n    moe_intermediate_size: 24\n");
  const cfg::Config with_ffn = cfg::load_config_file(ffn_keys);
  EXPECT_EQ(with_ffn.model.ffn.type(), "deepseek_moe");
  EXPECT_EQ(latentmoe::model::deepseek_moe_settings(with_ffn.model).n_shared_experts, 2);
  EXPECT_EQ(latentmoe::model::deepseek_moe_settings(with_ffn.model).moe_intermediate_size, 24);

  const auto legacy = dir.write("old.yaml", "model:\n  kv_lora_rank: 16\n  n_group: 2\n  scoring_func: softmax\n"
                                            "  moe_intermediate_size: 40\n  n_shared_experts: 3\n");
  const cfg::Config old = cfg::load_config_file(legacy);
  EXPECT_EQ(latentmoe::model::deepseek_moe_settings(old.model).moe_intermediate_size, 40);
  EXPECT_EQ(latentmoe::model::deepseek_moe_settings(old.model).n_shared_experts, 3);
  EXPECT_NE(cfg::dump_config_yaml(old).find("  ffn:"), std::string::npos);
  EXPECT_EQ(latentmoe::model::mla_settings(old.model).kv_lora_rank, 16);
  EXPECT_EQ(latentmoe::model::deepseek_router_settings(old.model).n_group, 2);
  EXPECT_EQ(latentmoe::model::deepseek_router_settings(old.model).scoring_func, "softmax");
  EXPECT_NE(cfg::dump_config_yaml(old).find("  attention:"), std::string::npos);
  EXPECT_EQ(cfg::load_config_text(cfg::dump_config_yaml(old), "dump"), old);
  const auto legacy_gqa = dir.write("og.yaml", "model:\n  kv_lora_rank: 16\n  attention:\n    type: gqa\n");
  expect_error_contains<ConfigError>([&] { cfg::load_config_file(legacy_gqa); },
                                     {"'model.kv_lora_rank' (now 'model.attention.kv_lora_rank') is not a key of "
                                      "model.attention.type 'gqa'"});
  const auto both = dir.write("two.yaml", "model:\n  kv_lora_rank: 16\n  attention:\n    kv_lora_rank: 8\n");
  expect_error_contains<ConfigError>([&] { cfg::load_config_file(both); }, {"'model.kv_lora_rank' is given twice"});

  cfg::Config set;
  cfg::apply_override(set, "model.attention.type=gqa");
  cfg::apply_override(set, "model.attention.num_key_value_heads=4");
  EXPECT_EQ(latentmoe::model::gqa_settings(set.model).num_key_value_heads, 4);
  cfg::Config other;
  EXPECT_FALSE(set == other);
  EXPECT_FALSE(other == set);
}
