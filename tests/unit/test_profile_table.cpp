// The step-time table: self times, attribution to the innermost category-bearing caller, the
// remainder of the step as "other", and threads outside the step ignored.
#include <gtest/gtest.h>

#include "latentmoe/train/profile_table.h"

using latentmoe::train::build_profile_table;
using latentmoe::train::ProfiledEvent;
using latentmoe::train::profile_category;

namespace {
double row(const latentmoe::train::ProfileTable& t, const std::string& category) {
  for (const auto& r : t.rows) {
    if (r.category == category) return r.seconds;
  }
  ADD_FAILURE() << "no row " << category;
  return -1;
}
constexpr uint64_t kMs = 1000000;
}  // namespace

TEST(ProfileTable, SelfTimesGoToTheInnermostCategory) {
  const std::vector<ProfiledEvent> events{
      {"latentmoe.step", 1, 0, 100 * kMs},
      {"aten::linear", 1, 0, 30 * kMs},               // 5 ms self
      {"aten::addmm", 1, 5 * kMs, 30 * kMs},          // GEMM 25 ms
      {"latentmoe.loss", 1, 30 * kMs, 50 * kMs},      // scope: its children are loss...
      {"aten::mm", 1, 30 * kMs, 40 * kMs},            // ...except a GEMM, which stays GEMM
      {"aten::log_softmax", 1, 40 * kMs, 48 * kMs},   // loss
      {"latentmoe::rms_norm", 1, 50 * kMs, 60 * kMs},  // norm
      {"aten::empty", 1, 52 * kMs, 53 * kMs},          // inside rms_norm: norm
      {"latentmoe.moe.dispatch", 1, 60 * kMs, 70 * kMs},
      {"aten::index_select", 1, 61 * kMs, 69 * kMs},  // MoE
      {"aten::copy_", 2, 0, 500 * kMs},                // another thread, no step scope: ignored
      {"aten::add", 1, 200 * kMs, 210 * kMs},          // after the step: ignored
  };
  const auto t = build_profile_table(events, "latentmoe.step");
  EXPECT_EQ(t.steps, 1);
  EXPECT_DOUBLE_EQ(t.step_seconds, 0.1);
  EXPECT_NEAR(row(t, "GEMM"), 0.035, 1e-12);
  EXPECT_NEAR(row(t, "loss"), 0.010, 1e-12);  // 8 ms log_softmax + 2 ms of the scope's own time
  EXPECT_NEAR(row(t, "norm/rope/activation"), 0.010, 1e-12);
  EXPECT_NEAR(row(t, "MoE routing/dispatch/combine"), 0.010, 1e-12);
  // linear's 5 ms self + the step's 30 ms outside every op.
  EXPECT_NEAR(row(t, "other"), 0.035, 1e-12);
  double sum = 0;
  for (const auto& r : t.rows) sum += r.seconds;
  EXPECT_NEAR(sum, t.step_seconds, 1e-12);
}

TEST(ProfileTable, AutogradNodesNameTheirCategory) {
  const std::string node = "autograd::engine::evaluate_function: torch::autograd::CppNode<RmsNormFunction>";
  EXPECT_EQ(profile_category("aten::mul", {&node}), "norm/rope/activation");
  const std::string attention = "autograd::engine::evaluate_function: ScaledDotProductFlashAttentionForCpuBackward0";
  EXPECT_EQ(profile_category("aten::empty", {&attention}), "attention");
  EXPECT_EQ(profile_category("aten::mm", {&attention}), "GEMM");
  EXPECT_EQ(profile_category("aten::add_", {}), "other");
  const std::string opt = "latentmoe.optimizer";
  EXPECT_EQ(profile_category("aten::_fused_adamw_", {}), "optimizer");
  EXPECT_EQ(profile_category("aten::mul_", {&opt}), "optimizer");
}
