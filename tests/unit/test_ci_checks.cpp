// The CI-facing pieces of `train`, without torch: --expect parsing and evaluation, golden files
// (round trip, malformed files, exact vs tolerance comparison, first divergence), JUnit escaping.
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>
#include <cmath>
#include <fstream>
#include <functional>

#include "latentmoe/train/expectations.h"
#include "latentmoe/train/golden.h"
#include "latentmoe/train/run_report.h"
#include "latentmoe/util/error.h"
#include "test_util.h"

using latentmoe::ConfigError;
using latentmoe::testing::expect_error_contains;
using latentmoe::testing::TempDir;
namespace train = latentmoe::train;

TEST(Expectations, ParsesEveryOperatorAndBothOperandKinds) {
  const std::map<std::string, double> m = {{"valid_loss", 5.0}, {"unigram_entropy", 6.9}, {"tokens_per_s", 2000}};
  struct Case {
    const char* text;
    bool holds;
  };
  for (const Case& c : {Case{"valid_loss<5.5", true}, Case{"valid_loss <= 5", true}, Case{" valid_loss > 5 ", false},
                        Case{"valid_loss>=5.0", true}, Case{"valid_loss==5", true}, Case{"valid_loss!=5", false},
                        Case{"valid_loss<unigram_entropy", true}, Case{"2500 < tokens_per_s", false},
                        Case{"tokens_per_s>=2e3", true}, Case{"valid_loss<-1", false}}) {
    const train::ExpectationResult r = train::evaluate_expectation(train::parse_expectation(c.text), m);
    EXPECT_EQ(r.passed, c.holds) << c.text << ": " << r.message;
    EXPECT_NE(r.message.find(c.text), std::string::npos) << r.message;
  }
}

TEST(Expectations, FailureNamesTheExpressionAndTheValue) {
  const auto r = train::evaluate_expectation(train::parse_expectation("valid_loss<5.5"), {{"valid_loss", 5.8123}});
  EXPECT_FALSE(r.passed);
  EXPECT_EQ(r.message, "valid_loss<5.5 failed: valid_loss = 5.8123");
  const auto missing = train::evaluate_expectation(train::parse_expectation("valid_loss<5.5"), {});
  EXPECT_FALSE(missing.passed);
  EXPECT_NE(missing.message.find("not available"), std::string::npos) << missing.message;
}

TEST(Expectations, MalformedExpressionsAreConfigErrorsNamingThem) {
  expect_error_contains<ConfigError>([] { train::parse_expectation("valid_los<5"); },
                                     {"--expect 'valid_los<5'", "unknown metric 'valid_los'", "did you mean 'valid_loss'"});
  expect_error_contains<ConfigError>([] { train::parse_expectation("valid_loss 5"); }, {"'valid_loss 5'", "no comparison operator"});
  expect_error_contains<ConfigError>([] { train::parse_expectation("valid_loss<"); }, {"right side is empty"});
  expect_error_contains<ConfigError>([] { train::parse_expectation("valid_loss<5x"); }, {"'5x' is not a finite number"});
  expect_error_contains<ConfigError>([] { train::parse_expectation("valid_loss<nan"); }, {"unknown metric 'nan'"});
  expect_error_contains<ConfigError>([] { train::parse_expectation("valid_loss<inf"); }, {"'inf'"});
  expect_error_contains<ConfigError>([] { train::parse_expectation("1<2"); }, {"at least one side must be a metric"});
  expect_error_contains<ConfigError>([] { train::parse_expectation("1<loss<3"); }, {"only one comparison"});
  expect_error_contains<ConfigError>([] { train::parse_expectation("loss=3"); }, {"'=' is not an operator"});
  expect_error_contains<ConfigError>([] { train::parse_expectation("loss>1<2"); }, {"only one comparison"});
  expect_error_contains<ConfigError>([] { train::parse_expectation("valid_loss =< 5"); }, {"'=' is not an operator"});
  expect_error_contains<ConfigError>([] { train::parse_expectation("valid_loss< =5"); }, {"only one comparison"});
  expect_error_contains<ConfigError>([] { train::parse_expectation("loss-1<3"); }, {"'loss-1' is neither"});
}

namespace {
train::GoldenRecord sample_record(int64_t steps) {
  train::GoldenRecord g;
  g.environment = {.latentmoe_version = "0.1.0", .torch_version = "2.11.0", .compiler = "gcc 12", .cpu_model = "cpu",
                   .cpu_capability = "AVX2", .compute_dtype = "fp32", .threads = 2, .world_size = 1,
                   .data = "d"};
  g.config_sha256 = "abc";
  g.config = {{"model.rope_theta", "10000.0"}, {"checkpoint.dir", "/a"}, {"train.steps", std::to_string(steps)}};
  g.command = {"latentmoe", "train", "--config", "tiny"};
  g.tolerance = train::default_golden_tolerance("fp32");
  for (int64_t s = 1; s <= steps; ++s) {
    const double x = 10.0 / static_cast<double>(s) + 0.1234567890123;
    g.steps.push_back({.step = s,
                       .scalars = {{"loss/total", x}, {"loss/lm", x * 0.9}, {"loss/mtp", x * 0.1}, {"loss/balance", 0.0},
                                   {"loss/z", 0.0}, {"grad_norm", 1.0 / x}},
                       .expert_load = {{500, 300, 150, 74}, {256, 256, 256, 256}}});
  }
  return g;
}
}  // namespace

TEST(Golden, RoundTripIsBitExact) {
  TempDir dir;
  const train::GoldenRecord g = sample_record(5);
  const std::string path = (dir.path() / "sub" / "g.json").string();
  train::write_golden(path, g);
  const train::GoldenRecord back = train::read_golden(path);
  EXPECT_EQ(back.environment, g.environment);
  ASSERT_EQ(back.steps.size(), 5u);
  for (size_t i = 0; i < 5; ++i) {
    EXPECT_EQ(back.steps[i].scalars, g.steps[i].scalars);  // doubles compared exactly
    EXPECT_EQ(back.steps[i].expert_load, g.steps[i].expert_load);
  }
  const train::GoldenReport same = train::compare_golden(back, g, train::GoldenMode::automatic);
  EXPECT_TRUE(same.passed()) << same.summary();
  EXPECT_TRUE(same.exact);
}

TEST(Golden, ExactModeCatchesTheSmallestChangeAndNamesTheFirstStep) {
  const train::GoldenRecord golden = sample_record(6);
  train::GoldenRecord run = golden;
  run.steps[3].scalars["loss/lm"] = std::nextafter(run.steps[3].scalars["loss/lm"], 100.0);
  run.steps[5].scalars["grad_norm"] *= 1.5;
  const train::GoldenReport r = train::compare_golden(golden, run, train::GoldenMode::automatic);
  EXPECT_TRUE(r.exact);
  EXPECT_FALSE(r.passed());
  const std::string s = r.summary();
  EXPECT_NE(s.find("first divergence at step 4 in loss/lm"), std::string::npos) << s;
  EXPECT_NE(s.find("not bit-identical"), std::string::npos) << s;
  EXPECT_NE(s.find("grad_norm"), std::string::npos) << s;  // also listed as failing
}

TEST(Golden, ToleranceModeWhenTheEnvironmentDiffers) {
  const train::GoldenRecord golden = sample_record(6);  // all six within the early, step-by-step phase
  const train::GoldenBounds& early = golden.tolerance.early;
  train::GoldenRecord run = golden;
  run.environment.threads = 1;
  run.steps[2].scalars["loss/total"] *= 1.0 + 0.5 * early.loss_rtol;  // inside
  run.steps[2].expert_load[0][0] += 5;                                // 5 of 1024 tokens: inside 1 %
  train::GoldenReport r = train::compare_golden(golden, run, train::GoldenMode::automatic);
  EXPECT_FALSE(r.exact);
  EXPECT_NE(r.mode_reason.find("threads 2 → 1"), std::string::npos) << r.mode_reason;
  EXPECT_TRUE(r.passed()) << r.summary();
  run.steps[4].scalars["loss/total"] *= 1.0 + 2.0 * early.loss_rtol;  // outside
  run.steps[3].expert_load[1][2] += 100;                               // outside
  r = train::compare_golden(golden, run, train::GoldenMode::automatic);
  EXPECT_FALSE(r.passed());
  const std::string s = r.summary();
  EXPECT_NE(s.find("first divergence at step 4 in expert_load/layer1: expert 2 received 356 tokens vs golden 256"),
            std::string::npos) << s;
  EXPECT_NE(s.find("loss/total"), std::string::npos) << s;
  // Forcing exact mode across environments fails even inside the tolerance.
  run = golden;
  run.environment.threads = 1;
  run.steps[0].scalars["loss/z"] = 1e-300;
  EXPECT_TRUE(train::compare_golden(golden, run, train::GoldenMode::tolerance).passed());
  EXPECT_FALSE(train::compare_golden(golden, run, train::GoldenMode::exact).passed());
}

TEST(Golden, AfterTheEarlyStepsWindowMeansAreCompared) {
  const train::GoldenRecord golden = sample_record(30);
  ASSERT_EQ(golden.tolerance.early_steps, 10);
  ASSERT_EQ(golden.tolerance.window, 10);
  train::GoldenRecord run = golden;
  // Steps 15 and 16 drift apart in opposite directions (as chaotic runs do); their window's mean holds.
  run.steps[14].scalars["loss/lm"] += 0.05;
  run.steps[15].scalars["loss/lm"] -= 0.05;
  run.steps[12].expert_load[0] = {300, 500, 150, 74};
  run.steps[13].expert_load[0] = {700, 100, 150, 74};
  EXPECT_TRUE(train::compare_golden(golden, run, train::GoldenMode::tolerance).passed());
  EXPECT_FALSE(train::compare_golden(golden, run, train::GoldenMode::exact).passed());
  for (size_t i = 20; i < 30; ++i) run.steps[i].scalars["loss/lm"] *= 1.0 + 2.0 * golden.tolerance.late.loss_rtol;
  const train::GoldenReport r = train::compare_golden(golden, run, train::GoldenMode::tolerance);
  EXPECT_NE(r.summary().find("first divergence at steps 21-30 (means) in loss/lm: "), std::string::npos) << r.summary();
  // The balance and z losses follow the routing: their late bound is aux_loss_rtol, not loss_rtol.
  run = golden;
  for (auto& step : run.steps) step.scalars["loss/balance"] = 0.01;
  train::GoldenRecord with_balance = golden;
  for (auto& step : with_balance.steps) step.scalars["loss/balance"] = 0.01;
  const double between = 0.5 * (golden.tolerance.late.loss_rtol + golden.tolerance.late.aux_loss_rtol);
  for (size_t i = 10; i < 30; ++i) run.steps[i].scalars["loss/balance"] *= 1.0 + between;
  EXPECT_TRUE(train::compare_golden(with_balance, run, train::GoldenMode::tolerance).passed());
  for (size_t i = 10; i < 30; ++i) run.steps[i].scalars["loss/balance"] = 0.01 * (1.0 + 2 * golden.tolerance.late.aux_loss_rtol);
  EXPECT_FALSE(train::compare_golden(with_balance, run, train::GoldenMode::tolerance).passed());
  // A NaN is never within tolerance, and a short last window joins the one before it.
  run = golden;
  run.steps[25].scalars["grad_norm"] = std::nan("");
  const train::GoldenReport nan = train::compare_golden(golden, run, train::GoldenMode::tolerance);
  EXPECT_FALSE(nan.passed());
  EXPECT_NE(nan.summary().find("steps 21-30 (means) in grad_norm"), std::string::npos) << nan.summary();
  train::GoldenRecord longer = sample_record(35);
  train::GoldenRecord longer_run = longer;
  longer_run.steps[34].scalars["loss/lm"] *= 2;
  EXPECT_NE(train::compare_golden(longer, longer_run, train::GoldenMode::tolerance).summary().find("steps 21-35 (means)"),
            std::string::npos);
}

TEST(Golden, StepRangeMismatchAndConfigDifferencesAreReported) {
  const train::GoldenRecord golden = sample_record(6);
  train::GoldenRecord run = sample_record(4);
  run.config[0].second = "50000.0";
  run.config[1].second = "/elsewhere";  // checkpoint.* is not a difference
  const train::GoldenReport r = train::compare_golden(golden, run, train::GoldenMode::automatic);
  EXPECT_FALSE(r.passed());
  EXPECT_NE(r.summary().find("the run trained steps 1-4, the golden file holds steps 1-6"), std::string::npos) << r.summary();
  ASSERT_EQ(r.config_differences.size(), 2u);  // rope_theta, and train.steps
  EXPECT_EQ(r.config_differences[0], "model.rope_theta: 10000.0 → 50000.0");
  EXPECT_TRUE(train::compare_golden(golden, train::GoldenRecord{.steps = {}}, train::GoldenMode::automatic).checks[0].passed == false);
}

TEST(Golden, MalformedFilesNameTheFileAndKey) {
  TempDir dir;
  expect_error_contains<ConfigError>([&] { train::read_golden((dir.path() / "none.json").string()); },
                                     {"none.json", "cannot be read", "--golden-write"});
  const std::string bad_json = dir.write("bad.json", "{\"format\": ");
  expect_error_contains<ConfigError>([&] { train::read_golden(bad_json); }, {"bad.json", "not valid JSON"});
  const std::string path = (dir.path() / "g.json").string();
  train::write_golden(path, sample_record(3));
  auto edit = [&](const std::function<void(nlohmann::json&)>& change) {
    std::ifstream in(path);
    nlohmann::json doc = nlohmann::json::parse(in);
    change(doc);
    return dir.write("edited.json", doc.dump());
  };
  const std::string no_env = edit([](nlohmann::json& d) { d["environment"].erase("threads"); });
  expect_error_contains<ConfigError>([&] { train::read_golden(no_env); }, {"edited.json", "'environment.threads' is missing"});
  const std::string wrong_type = edit([](nlohmann::json& d) { d["steps"][1]["grad_norm"] = "x"; });
  expect_error_contains<ConfigError>([&] { train::read_golden(wrong_type); }, {"'steps[1].grad_norm' has the wrong type"});
  const std::string gap = edit([](nlohmann::json& d) { d["steps"][2]["step"] = 7; });
  expect_error_contains<ConfigError>([&] { train::read_golden(gap); }, {"'steps[2].step' is 7, expected 3"});
  const std::string negative = edit([](nlohmann::json& d) { d["tolerance"]["early"]["loss_rtol"] = -1; });
  expect_error_contains<ConfigError>([&] { train::read_golden(negative); }, {"'tolerance.early.loss_rtol' is -1"});
  const std::string version = edit([](nlohmann::json& d) { d["version"] = 9; });
  expect_error_contains<ConfigError>([&] { train::read_golden(version); }, {"'version' is 9"});
  expect_error_contains<ConfigError>([] { train::parse_golden_mode("strict"); }, {"--golden-mode 'strict'", "auto, exact, tolerance"});
}

TEST(RunReport, XmlEscapingAndExitCodes) {
  EXPECT_EQ(train::xml_escape("a<b & \"c\" > 'd'\x01"), "a&lt;b &amp; &quot;c&quot; &gt; &apos;d&apos;");
  EXPECT_EQ(train::xml_escape("\xC3\xA9 \xFF \xE2\x86\x92"), "\xC3\xA9 \xEF\xBF\xBD \xE2\x86\x92");  // é, broken byte, →
  train::RunSummary s;
  s.expectations.push_back({.expression = "loss<1", .passed = true, .lhs = 0.5, .rhs = 1.0, .message = "ok"});
  train::finish_summary(s, 0);
  EXPECT_EQ(s.exit_code, 0);
  EXPECT_EQ(s.status, "passed");
  s.expectations.push_back({.expression = "loss<0.1", .passed = false, .lhs = 0.5, .rhs = 0.1, .message = "no"});
  train::finish_summary(s, 0);
  EXPECT_EQ(s.exit_code, latentmoe::kExitCheckFailed);
  EXPECT_EQ(s.status, "failed");
  train::finish_summary(s, 4);  // training's own failure wins
  EXPECT_EQ(s.exit_code, 4);
  EXPECT_EQ(s.status, "error");
  train::finish_summary(s, 3);
  EXPECT_EQ(s.exit_code, 3);
  EXPECT_EQ(s.status, "interrupted");
}
