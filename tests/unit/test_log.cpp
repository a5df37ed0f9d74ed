// Logging: level filtering, rank prefix, optional file sink, bad level named.
#include <gtest/gtest.h>

#include <fstream>
#include <sstream>

#include "latentmoe/util/error.h"
#include "latentmoe/util/log.h"
#include "test_util.h"

using latentmoe::testing::TempDir;

namespace {
std::string read_file(const std::filesystem::path& path) {
  std::ifstream in(path);
  std::stringstream text;
  text << in.rdbuf();
  return text.str();
}
}  // namespace

TEST(Log, FileSinkRankPrefixAndLevel) {
  TempDir dir;
  const auto file = dir.path() / "run.log";
  latentmoe::log_init({.level = "info", .file = file.string(), .rank = 3, .world_size = 4});
  LMOE_DEBUG("hidden {}", 1);
  LMOE_INFO("step {} loss {:.3f}", 7, 2.5);
  LMOE_WARN("expert {} idle", 5);
  latentmoe::log_init({.level = "info"});  // closes the file sink
  const std::string text = read_file(file);
  EXPECT_EQ(text.find("hidden"), std::string::npos) << "debug lines are filtered at level info";
  EXPECT_NE(text.find("[rank 3] [info] step 7 loss 2.500"), std::string::npos) << text;
  EXPECT_NE(text.find("[rank 3] [warning] expert 5 idle"), std::string::npos) << text;
}

TEST(Log, NoRankPrefixForASingleProcess) {
  TempDir dir;
  const auto file = dir.path() / "single.log";
  latentmoe::log_init({.level = "debug", .file = file.string(), .rank = -1, .world_size = 1});
  LMOE_DEBUG("visible");
  latentmoe::log_init({.level = "info"});
  const std::string text = read_file(file);
  EXPECT_NE(text.find("[debug] visible"), std::string::npos) << text;
  EXPECT_EQ(text.find("rank"), std::string::npos) << text;
}

TEST(Log, BadLevelAndUnwritableFileAreConfigErrors) {
  latentmoe::testing::expect_error_contains<latentmoe::ConfigError>(
      [] { latentmoe::log_init({.level = "loud"}); },
      {"logging.level must be one of trace, debug, info, warn, error; got 'loud'"});
  latentmoe::testing::expect_error_contains<latentmoe::ConfigError>(
      [] { latentmoe::log_init({.level = "info", .file = "/proc/no/such/dir/x.log"}); },
      {"logging.file '/proc/no/such/dir/x.log': cannot open for writing"});
}
