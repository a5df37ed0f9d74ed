// Activation recomputation changes what is kept, never what is computed: with train.recompute
// selective or full the outputs, the routing (expert counts included, counted once) and every
// parameter gradient equal the run that keeps everything, in fp32 and under bf16 autocast.
#include <ATen/autocast_mode.h>
#include <gtest/gtest.h>

#include "latentmoe/model/deepseek_v3.h"
#include "latentmoe/model/recompute.h"
#include "model_fixtures.h"

namespace model = latentmoe::model;

namespace {
struct RunResult {
  torch::Tensor loss;
  std::vector<torch::Tensor> counts;
  std::map<std::string, torch::Tensor> grads;
};

RunResult run(model::Recompute mode, bool bf16) {
  torch::manual_seed(3);
  auto cfg = latentmoe::testing::tiny_model_config();
  model::DeepSeekV3 m(cfg);
  m->reset_parameters(0.2, 1);
  m->set_recompute(mode);
  m->train();
  const torch::Tensor ids = torch::randint(0, cfg.vocab_size, {2, 9}, torch::kLong);
  at::autocast::set_autocast_enabled(c10::DeviceType::CPU, bf16);
  at::autocast::set_autocast_dtype(c10::DeviceType::CPU, at::kBFloat16);
  const model::ModelOutput out = m->forward(ids, /*with_mtp=*/true);
  torch::Tensor loss = out.logits.to(torch::kFloat).logsumexp(-1).mean();
  for (const auto& logits : out.mtp_logits) loss = loss + logits.to(torch::kFloat).logsumexp(-1).mean();
  RunResult r;
  for (const auto& routing : out.routing) {
    loss = loss + routing.token_scores.pow(2).mean() + routing.logits.pow(2).mean() * 1e-3;
    r.counts.push_back(routing.expert_counts.clone());
  }
  at::autocast::set_autocast_enabled(c10::DeviceType::CPU, false);
  at::autocast::clear_cache();
  loss.backward();
  r.loss = loss.detach();
  for (const auto& p : m->named_parameters()) {
    r.grads[p.key()] = p.value().grad().defined() ? p.value().grad().clone() : torch::Tensor();
  }
  return r;
}

void expect_same(const RunResult& got, const RunResult& want, const std::string& what) {
  EXPECT_NEAR(got.loss.item<double>(), want.loss.item<double>(), 1e-6 * std::abs(want.loss.item<double>())) << what;
  ASSERT_EQ(got.counts.size(), want.counts.size()) << what;
  for (size_t i = 0; i < got.counts.size(); ++i) EXPECT_TRUE(torch::equal(got.counts[i], want.counts[i])) << what << " layer " << i;
  ASSERT_EQ(got.grads.size(), want.grads.size());
  for (const auto& [name, g] : want.grads) {
    const torch::Tensor& other = got.grads.at(name);
    ASSERT_EQ(other.defined(), g.defined()) << what << " " << name;
    if (!g.defined()) continue;
    const double scale = std::max(g.abs().max().item<double>(), 1e-12);
    EXPECT_LE((other - g).abs().max().item<double>() / scale, 1e-5) << what << " " << name;
  }
}
}  // namespace

TEST(Recompute, SelectiveAndFullEqualKeepingEverything) {
  for (bool bf16 : {false, true}) {
    const RunResult none = run(model::Recompute::none, bf16);
    expect_same(run(model::Recompute::selective, bf16), none, bf16 ? "selective bf16" : "selective fp32");
    expect_same(run(model::Recompute::full, bf16), none, bf16 ? "full bf16" : "full fp32");
  }
}

TEST(Recompute, OffOutsideTrainingAndNamesBadModes) {
  EXPECT_FALSE(model::recompute_active(true, /*training=*/false));
  {
    torch::NoGradGuard no_grad;
    EXPECT_FALSE(model::recompute_active(true, true));
  }
  EXPECT_TRUE(model::recompute_active(true, true));
  EXPECT_EQ(model::parse_recompute("selective"), model::Recompute::selective);
  EXPECT_THROW(model::parse_recompute("some"), std::invalid_argument);
}
