// The CLI end to end: exit codes and messages of `latentmoe config` and `version`.
#include <gtest/gtest.h>

#include <algorithm>
#include <array>
#include <filesystem>
#include <fstream>
#include <cstdio>
#include <string>

#include "test_util.h"

using latentmoe::testing::TempDir;

namespace {
struct CliRun {
  int exit_code;
  std::string output;  // stdout and stderr together
};

CliRun run_cli(const std::string& args) {
  const std::string command = std::string(LATENTMOE_BINARY) + " " + args + " 2>&1";
  FILE* pipe = popen(command.c_str(), "r");
  std::string output;
  std::array<char, 4096> buffer{};
  size_t n = 0;
  while ((n = fread(buffer.data(), 1, buffer.size(), pipe)) > 0) output.append(buffer.data(), n);
  const int status = pclose(pipe);
  return {WIFEXITED(status) ? WEXITSTATUS(status) : -1, output};
}

std::string preset(const std::string& name) { return std::string(LATENTMOE_SOURCE_DIR) + "/configs/" + name + ".yaml"; }
}  // namespace

TEST(Cli, HelpForEverySubcommand) {
  for (const char* sub : {"", "config ", "version ", "init ", "convert ", "forward ", "generate "}) {
    const CliRun r = run_cli(std::string(sub) + "--help");
    EXPECT_EQ(r.exit_code, 0) << sub;
    EXPECT_NE(r.output.find("Usage"), std::string::npos) << r.output;
  }
  EXPECT_NE(run_cli("config --help").output.find("--set"), std::string::npos);
}

TEST(Cli, UsageErrorsExit2) {
  EXPECT_EQ(run_cli("").exit_code, 2);
  EXPECT_EQ(run_cli("frobnicate").exit_code, 2);
  EXPECT_EQ(run_cli("config --no-such-flag").exit_code, 2);
}

TEST(Cli, DumpV3PrintsTheFullConfigAndReloads) {
  TempDir dir;
  const CliRun r = run_cli("config --config " + preset("deepseek-v3") + " --dump");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  for (const char* key : {"n_routed_experts: 256", "hidden_size: 7168", "q_lora_rank: 1536", "tokens: 14800000000000", "start: 3072",
                          "stepdown_lr: [7.3e-06]", "ep: 64", "bias_update_freeze_tokens: 14300000000000"}) {
    EXPECT_NE(r.output.find(key), std::string::npos) << key;
  }
  const std::string dumped = dir.write("v3.yaml", r.output);
  const CliRun again = run_cli("config --config " + dumped + " --dump");
  EXPECT_EQ(again.exit_code, 0);
  EXPECT_EQ(again.output, r.output) << "--dump output must re-load to the identical config";
}

TEST(Cli, ConflictingOverrideNamesBothKeys) {
  const CliRun r = run_cli("config --config " + preset("deepseek-v3") + " --set model.n_routed_experts=255");
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_NE(r.output.find("model.n_routed_experts (255) must be divisible by model.router.n_group (8)"), std::string::npos)
      << r.output;
}

TEST(Cli, TypoAndWrongTypeFailWithLocation) {
  TempDir dir;
  const std::string typo = dir.write("typo.yaml", "model:\n  n_routed_expert: 4\n");
  CliRun r = run_cli("config --config " + typo);
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_NE(r.output.find("unknown key 'model.n_routed_expert' at " + typo + ":2 (did you mean 'n_routed_experts'?)"),
            std::string::npos)
      << r.output;
  const std::string wrong = dir.write("wrong.yaml", "train:\n  steps: lots\n");
  r = run_cli("config --config " + wrong);
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_NE(r.output.find("'train.steps' expects int, got string 'lots' at " + wrong + ":2"), std::string::npos)
      << r.output;
}

TEST(Cli, PresetNamesAndWorldSize) {
  CliRun r = run_cli("config --config small");
  EXPECT_EQ(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find("config OK"), std::string::npos);
  r = run_cli("config --config deepseek-v3 --world-size 8");
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_NE(r.output.find("parallel.ep (64) must divide the world size (8 ranks)"), std::string::npos) << r.output;
  EXPECT_EQ(run_cli("config --config deepseek-v3 --world-size 128").exit_code, 0);
  EXPECT_EQ(run_cli("config --config nope").exit_code, 2);
}

TEST(Cli, VersionReportsRuntime) {
  const CliRun r = run_cli("version");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  for (const char* fragment : {"torch      2.11.0", "cuda       ", "threads    intra-op", "oneDNN"}) {
    EXPECT_NE(r.output.find(fragment), std::string::npos) << fragment << " in\n" << r.output;
  }
}

TEST(Cli, InitGenerateAndBadTokenIds) {
  TempDir dir;
  const std::string model_dir = (dir.path() / "m").string();
  CliRun r = run_cli("init --set model.num_hidden_layers=2 --out " + model_dir);
  ASSERT_EQ(r.exit_code, 0) << r.output;
  r = run_cli("generate --checkpoint " + model_dir + " --prompt-ids 1,2,3 --max-tokens 4");
  EXPECT_EQ(r.exit_code, 0) << r.output;
  EXPECT_EQ(std::count(r.output.begin(), r.output.end(), ','), 3) << r.output;
  r = run_cli("generate --checkpoint " + model_dir + " --prompt-ids 1,99999");
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_NE(r.output.find("--prompt-ids: token id 99999 is outside [0, model.vocab_size=8192)"), std::string::npos)
      << r.output;
  r = run_cli("generate --checkpoint " + model_dir + " --prompt-ids 1,x");
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_NE(r.output.find("'x' is not an integer token id"), std::string::npos) << r.output;
  r = run_cli("generate --checkpoint " + model_dir + " --prompt-ids 1 --top-p 0");
  EXPECT_EQ(r.exit_code, 2);
  // Each of these used to be accepted (or to end in a raw torch message with exit 1).
  for (const char* ids : {"1,,2", ",1", "1,2,", "1;;2"}) {
    r = run_cli("generate --checkpoint " + model_dir + " --prompt-ids '" + std::string(ids) + "'");
    EXPECT_EQ(r.exit_code, 2) << ids << ": " << r.output;
    EXPECT_NE(r.output.find("--prompt-ids: '" + std::string(ids) + "'"), std::string::npos) << r.output;
  }
  r = run_cli("generate --checkpoint " + model_dir + " --prompt-ids 1 --temperature nan");
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_NE(r.output.find("--temperature nan: must be a finite number >= 0"), std::string::npos) << r.output;
  r = run_cli("generate --checkpoint " + model_dir + " --prompt-ids 1 --stop-id 999999");
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_NE(r.output.find("--stop-id 999999: must be a token id in [0, model.vocab_size=8192) or -1"), std::string::npos)
      << r.output;
  r = run_cli("generate --checkpoint " + (dir.path() / "none").string() + " --prompt-ids 1");
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.output.find("not a latentmoe model directory"), std::string::npos) << r.output;
}

TEST(Cli, WritersRefuseNonEmptyDirectoriesWithoutForceAndCommittedOnesAlways) {
  TempDir dir;
  const std::string model_dir = (dir.path() / "m").string();
  ASSERT_EQ(run_cli("init --set model.num_hidden_layers=2 --out " + model_dir).exit_code, 0);
  const auto weights = std::filesystem::path(model_dir) / "model.safetensors";
  const auto before = std::filesystem::last_write_time(weights);
  CliRun r = run_cli("init --set model.num_hidden_layers=2 --set seed=7 --out " + model_dir);
  EXPECT_EQ(r.exit_code, 2) << r.output;
  EXPECT_NE(r.output.find("the directory is not empty"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("--force"), std::string::npos) << r.output;
  EXPECT_EQ(std::filesystem::last_write_time(weights), before);  // untouched
  EXPECT_EQ(run_cli("init --set model.num_hidden_layers=2 --out " + model_dir + " --force").exit_code, 0);
  const std::string hf_dir = (dir.path() / "hf").string();
  ASSERT_EQ(run_cli("convert --checkpoint " + model_dir + " --to-hf " + hf_dir).exit_code, 0);
  r = run_cli("convert --checkpoint " + model_dir + " --to-hf " + hf_dir);
  EXPECT_EQ(r.exit_code, 2) << r.output;
  r = run_cli("convert --from-hf " + hf_dir + " --out " + model_dir);
  EXPECT_EQ(r.exit_code, 2) << r.output;
  EXPECT_NE(r.output.find("--out " + model_dir + ": the directory is not empty"), std::string::npos) << r.output;
  std::ofstream(std::filesystem::path(model_dir) / "COMMITTED") << "";
  r = run_cli("init --set model.num_hidden_layers=2 --out " + model_dir + " --force");
  EXPECT_EQ(r.exit_code, 2) << r.output;
  EXPECT_NE(r.output.find("is a committed training checkpoint; it is never overwritten"), std::string::npos) << r.output;
  r = run_cli("convert --from-hf " + hf_dir + " --out " + model_dir + " --force");
  EXPECT_EQ(r.exit_code, 2) << r.output;
}

TEST(Cli, SummaryOfAnAbsurdModelIsAnErrorNotANegativeCount) {
  const CliRun r = run_cli("config --set model.hidden_size=2147483648 --summary");
  EXPECT_EQ(r.exit_code, 2) << r.output;  // it printed "MTP -9223367782689.65M extra parameters"
  EXPECT_NE(r.output.find("the parameter count overflows 64-bit integers"), std::string::npos) << r.output;
  EXPECT_EQ(r.output.find("-9"), std::string::npos) << r.output;
  EXPECT_EQ(run_cli("config --config deepseek-v3 --summary").exit_code, 0);
}

TEST(Cli, EndOfRunSaysAboveWhenTheLossIsAboveTheEntropy) {
  TempDir dir;
  const std::string d = dir.path().string();
  const CliRun r = run_cli("train --config tiny --set train.steps=2 --set schedule.warmup=1 --set train.eval_batches=1 "
                           "--set checkpoint.dir=" + d + "/c --set logging.dir=" + d + "/l");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find("nats above"), std::string::npos) << r.output;  // it used to say "-1.2 nats below"
  EXPECT_EQ(r.output.find("nats below"), std::string::npos) << r.output;
}

// Issue 15, finding 2: a NaN written into a committed checkpoint's weights was generated from,
// forwarded and exported with exit 0; every reader now verifies the manifest first.
TEST(Cli, EveryCheckpointReaderVerifiesTheManifest) {
  TempDir dir;
  const std::string d = dir.path().string();
  ASSERT_EQ(run_cli("train --config tiny --set train.steps=2 --set schedule.warmup=1 --set train.eval_batches=1 "
                    "--set checkpoint.dir=" + d + "/c --set logging.dir=" + d + "/l").exit_code, 0);
  const std::string ckpt = d + "/c/step-00000002";
  ASSERT_EQ(run_cli("generate --checkpoint " + ckpt + " --prompt-ids 1,2 --max-tokens 2").exit_code, 0);
  {  // a NaN (0x7fc00000, little-endian) over 4 bytes in the middle of the weights
    std::fstream f(ckpt + "/model.safetensors", std::ios::in | std::ios::out | std::ios::binary);
    f.seekp(static_cast<std::streamoff>(std::filesystem::file_size(ckpt + "/model.safetensors") / 2 / 4 * 4));
    const char nan[4] = {0, 0, static_cast<char>(0xc0), 0x7f};
    f.write(nan, 4);
  }
  for (const std::string& cmd : {"generate --checkpoint " + ckpt + " --prompt-ids 1,2",
                                 "forward --checkpoint " + ckpt + " --ids 1,2 --out " + d + "/f.safetensors",
                                 "convert --checkpoint " + ckpt + " --to-hf " + d + "/hf"}) {
    const CliRun r = run_cli(cmd);
    EXPECT_EQ(r.exit_code, 1) << cmd << ": " << r.output;
    EXPECT_NE(r.output.find("model.safetensors: SHA-256 mismatch"), std::string::npos) << r.output;
  }
  EXPECT_FALSE(std::filesystem::exists(d + "/f.safetensors"));
  EXPECT_FALSE(std::filesystem::exists(d + "/hf/model.safetensors"));
  // init writes a manifest too; a directory without one is read only with --no-verify.
  const std::string model_dir = d + "/m";
  ASSERT_EQ(run_cli("init --set model.num_hidden_layers=2 --out " + model_dir).exit_code, 0);
  ASSERT_TRUE(std::filesystem::exists(model_dir + "/manifest.json"));
  std::filesystem::remove(model_dir + "/manifest.json");
  CliRun r = run_cli("generate --checkpoint " + model_dir + " --prompt-ids 1,2 --max-tokens 2");
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.output.find("no manifest.json"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("--no-verify"), std::string::npos) << r.output;
  EXPECT_EQ(run_cli("generate --checkpoint " + model_dir + " --prompt-ids 1,2 --max-tokens 2 --no-verify").exit_code, 0);
}

TEST(Cli, ConvertRejectsCorruptCheckpoints) {
  TempDir dir;
  const std::string model_dir = (dir.path() / "m").string();
  ASSERT_EQ(run_cli("init --set model.num_hidden_layers=2 --out " + model_dir).exit_code, 0);
  // Truncate the weights: the manifest check names the file; unverified, the bounds-checked reader
  // names the file and a tensor; either way nothing is written.
  const auto weights = std::filesystem::path(model_dir) / "model.safetensors";
  std::filesystem::resize_file(weights, std::filesystem::file_size(weights) / 2);
  CliRun r = run_cli("convert --checkpoint " + model_dir + " --to-hf " + (dir.path() / "hf").string());
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.output.find("model.safetensors: SHA-256 mismatch"), std::string::npos) << r.output;
  r = run_cli("convert --checkpoint " + model_dir + " --to-hf " + (dir.path() / "hf").string() + " --no-verify");
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.output.find("model.safetensors: tensor '"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("exceed the data buffer"), std::string::npos) << r.output;
  EXPECT_FALSE(std::filesystem::exists(dir.path() / "hf" / "model.safetensors"));
  EXPECT_EQ(run_cli("convert --from-hf " + model_dir).exit_code, 2) << "--from-hf needs --out";
}
