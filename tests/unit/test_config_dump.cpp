// Dump round-trip for every preset and odd values; the generated reference matches docs/.
#include <gtest/gtest.h>

#include <fstream>
#include <sstream>

#include "latentmoe/config/loader.h"
#include "test_util.h"

using latentmoe::testing::TempDir;
namespace cfg = latentmoe::config;

namespace {
cfg::Config reload(const cfg::Config& c) {
  TempDir dir;
  return cfg::load_config_file(dir.write("dump.yaml", cfg::dump_config_yaml(c)));
}
}  // namespace

TEST(ConfigDump, EveryPresetRoundTrips) {
  for (const auto& name : cfg::preset_names()) {
    const cfg::Config c = cfg::load_config(name, {});
    const cfg::Config back = reload(c);
    EXPECT_TRUE(back == c) << name;
    EXPECT_EQ(cfg::dump_config_yaml(back), cfg::dump_config_yaml(c)) << name;
  }
}

TEST(ConfigDump, OddValuesRoundTrip) {
  cfg::Config c;
  cfg::apply_override(c, "name='a: b # c'");
  cfg::apply_override(c, "data.paths=['x y', 'z,w', '']");
  cfg::apply_override(c, "data.tokenizer='null'");
  cfg::apply_override(c, "model.q_lora_rank=null");
  cfg::apply_override(c, "optimizer.lr=0.1");
  cfg::apply_override(c, "optimizer.eps=1e-300");
  cfg::apply_override(c, "schedule.min_lr=0.030000000000000002");
  cfg::apply_override(c, "model.routed_scaling_factor=2");
  const cfg::Config back = reload(c);
  EXPECT_EQ(cfg::dump_config_yaml(back), cfg::dump_config_yaml(c));
  EXPECT_TRUE(back == c);
  EXPECT_EQ(back.data.tokenizer, "null") << "a string 'null' stays a string";
}

TEST(ConfigDump, DumpListsEveryKeyWithItsDoc) {
  const std::string text = cfg::dump_config_yaml(cfg::Config{});
  cfg::Config c;
  size_t count = 0;
  cfg::for_each_field(cfg::describe_root(c), [&](const std::string& path, const cfg::FieldInfo& f) {
    ++count;
    const std::string leaf = path.substr(path.rfind('.') == std::string::npos ? 0 : path.rfind('.') + 1);
    EXPECT_NE(text.find(leaf + ": "), std::string::npos) << path;
    EXPECT_NE(text.find(std::string(f.doc)), std::string::npos) << path;
    EXPECT_FALSE(f.doc.empty()) << path << " has no doc";
  });
  EXPECT_GT(count, 60u);
}

TEST(ConfigDocs, ReferenceIsUpToDate) {
  std::ifstream in(std::string(LATENTMOE_SOURCE_DIR) + "/docs/configuration.md");
  ASSERT_TRUE(in) << "docs/configuration.md is missing: run `make docs`";
  std::stringstream committed;
  committed << in.rdbuf();
  EXPECT_EQ(committed.str(), cfg::config_reference_markdown())
      << "docs/configuration.md drifted from the schema: run `make docs` and commit it";
}
