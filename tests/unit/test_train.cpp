// Trainer components: schedules vs closed forms, AdamW vs torch's, the balancing rule, MTP loss
// weighting, checkpoint integrity, and the trainer's non-finite guard, determinism and resume.
#include <gtest/gtest.h>
#include <torch/optim/adamw.h>

#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <random>

#include "latentmoe/data/indexed_dataset.h"
#include "latentmoe/io/model_io.h"
#include "latentmoe/model/mla.h"
#include "latentmoe/train/adamw_cpu.h"
#include "latentmoe/train/balancer.h"
#include "latentmoe/train/checkpoint.h"
#include "latentmoe/train/losses.h"
#include "latentmoe/train/optimizer.h"
#include "latentmoe/train/schedule.h"
#include "latentmoe/train/trainer.h"
#include "latentmoe/util/error.h"
#include "latentmoe/util/hash.h"
#include "model_fixtures.h"
#include "test_util.h"

namespace cfg = latentmoe::config;
namespace train = latentmoe::train;
using latentmoe::testing::expect_error_contains;
using latentmoe::testing::TempDir;

TEST(Schedule, WarmupCosineMatchesClosedForm) {
  cfg::ScheduleConfig s;
  s.type = "cosine";
  s.warmup = 10;
  s.min_lr = 1e-4;
  const train::LrSchedule lr(s, 1e-3, 110, 1000);
  EXPECT_DOUBLE_EQ(lr.lr(0, 0), 1e-3 * 1 / 10);
  EXPECT_DOUBLE_EQ(lr.lr(9, 0), 1e-3);
  EXPECT_DOUBLE_EQ(lr.lr(10, 0), 1e-3);
  EXPECT_DOUBLE_EQ(lr.lr(60, 0), 1e-4 + 0.5 * (1e-3 - 1e-4) * (1 + std::cos(M_PI * 0.5)));
  EXPECT_DOUBLE_EQ(lr.lr(110, 0), 1e-4);
  s.type = "constant";
  EXPECT_DOUBLE_EQ(train::LrSchedule(s, 1e-3, 110, 1000).lr(80, 0), 1e-3);
}

TEST(Schedule, DeepSeekMultiphaseInTokens) {
  cfg::ScheduleConfig s;
  s.type = "multiphase";
  s.unit = "tokens";
  s.warmup = 2;
  s.decay_start = 1000;
  s.decay_length = 400;
  s.min_lr = 2.2e-5;
  s.stepdown_at = {1500};
  s.stepdown_lr = {7.3e-6};
  const train::LrSchedule lr(s, 2.2e-4, 100, 50);
  EXPECT_DOUBLE_EQ(lr.lr(0, 0), 1.1e-4);
  EXPECT_DOUBLE_EQ(lr.lr(5, 900), 2.2e-4) << "constant phase";
  EXPECT_DOUBLE_EQ(lr.lr(25, 1100), 2.2e-5 + 0.5 * (2.2e-4 - 2.2e-5) * (1 + std::cos(M_PI * 0.25)));
  EXPECT_DOUBLE_EQ(lr.lr(29, 1450), 2.2e-5) << "after the decay, before the step-down";
  EXPECT_DOUBLE_EQ(lr.lr(31, 1550), 7.3e-6);
}

TEST(AdamW, MatchesTorchAdamWWithParameterGroups) {
  torch::manual_seed(0);
  const torch::Tensor w0 = torch::randn({4, 3}), b0 = torch::randn({4});
  torch::Tensor w = w0.clone().requires_grad_(), b = b0.clone().requires_grad_();
  torch::Tensor tw = w0.clone().requires_grad_(), tb = b0.clone().requires_grad_();
  cfg::OptimizerConfig o;
  o.weight_decay = 0.1;
  train::AdamW ours({{"w", w}, {"b", b}}, o);
  EXPECT_TRUE(ours.decays("w"));
  EXPECT_FALSE(ours.decays("b")) << "1-D tensors are not decayed by default";
  std::vector<torch::optim::OptimizerParamGroup> groups;
  groups.emplace_back(std::vector<torch::Tensor>{tw}, std::make_unique<torch::optim::AdamWOptions>(
                                                          torch::optim::AdamWOptions(1e-2).betas({0.9, 0.95}).eps(1e-8).weight_decay(0.1)));
  groups.emplace_back(std::vector<torch::Tensor>{tb}, std::make_unique<torch::optim::AdamWOptions>(
                                                          torch::optim::AdamWOptions(1e-2).betas({0.9, 0.95}).eps(1e-8).weight_decay(0.0)));
  torch::optim::AdamW reference(groups);
  const torch::Tensor x = torch::randn({5, 3});
  for (int step = 0; step < 5; ++step) {
    ours.zero_grad();
    reference.zero_grad();
    (torch::matmul(x, w.t()) + b).pow(2).sum().backward();
    (torch::matmul(x, tw.t()) + tb).pow(2).sum().backward();
    ours.step(1e-2);
    reference.step();
  }
  EXPECT_TRUE(torch::allclose(w, tw, 1e-6, 1e-7));
  EXPECT_TRUE(torch::allclose(b, tb, 1e-6, 1e-7));
}

// The fused CPU update (train/adamw_cpu.h) on a tensor of whole 16-lane vectors plus a tail, against
// torch's AdamW; and step(lr, scale) equals step(lr) on gradients multiplied by scale.
TEST(AdamW, FusedUpdateMatchesTorchAndScalesGradients) {
  torch::manual_seed(3);
  const torch::Tensor w0 = torch::randn({37, 29});
  torch::Tensor w = w0.clone().requires_grad_(), tw = w0.clone().requires_grad_();
  torch::Tensor sw = w0.clone().requires_grad_();
  cfg::OptimizerConfig o;
  o.weight_decay = 0.1;
  train::AdamW ours({{"w", w}}, o), scaled({{"w", sw}}, o);
  torch::optim::AdamW reference({tw}, torch::optim::AdamWOptions(1e-2).betas({0.9, 0.95}).eps(1e-8).weight_decay(0.1));
  const torch::Tensor x = torch::randn({6, 29});
  for (int step = 0; step < 5; ++step) {
    ours.zero_grad(), scaled.zero_grad(), reference.zero_grad();
    torch::matmul(x, w.t()).pow(2).sum().backward();
    torch::matmul(x, tw.t()).pow(2).sum().backward();
    torch::matmul(x, sw.t()).pow(2).sum().backward();
    {
      torch::NoGradGuard no_grad;
      w.mutable_grad().mul_(0.25f);
      tw.mutable_grad().mul_(0.25f);
    }
    ours.step(1e-2);
    reference.step();
    scaled.step(1e-2, 0.25);
    EXPECT_TRUE(torch::equal(w, sw)) << "step " << step;
  }
  EXPECT_TRUE(torch::allclose(w, tw, 1e-6, 1e-7));
}

// optimizer.moments_dtype=bf16: moments stored in bf16, each update in fp32 and the moments
// rounded after it (a hand-written reference does exactly that); checkpoints carry fp32 moments,
// and a bf16-moment state resumes into an fp32-moment optimizer and back.
TEST(AdamW, Bf16MomentsRoundOnceAfterAnFp32UpdateAndCheckpointInFp32) {
  torch::manual_seed(5);
  const torch::Tensor w0 = torch::randn({9, 7});
  torch::Tensor w = w0.clone().requires_grad_(), f = w0.clone().requires_grad_();
  cfg::OptimizerConfig o;
  o.weight_decay = 0.1;
  cfg::OptimizerConfig narrow = o;
  narrow.moments_dtype = "bf16";
  train::AdamW ours({{"w", w}}, narrow), full({{"w", f}}, o);
  torch::Tensor ref = w0.clone(), m = torch::zeros({9, 7}), v = torch::zeros({9, 7});
  const torch::Tensor x = torch::randn({4, 7});
  for (int step = 1; step <= 4; ++step) {
    ours.zero_grad(), full.zero_grad();
    torch::matmul(x, w.t()).pow(2).sum().backward();
    torch::matmul(x, f.t()).pow(2).sum().backward();
    const torch::Tensor g = w.grad().clone();
    ours.step(1e-2);
    full.step(1e-2);
    // The reference: fp32 arithmetic on bf16-held moments.
    ref.mul_(1.0 - 1e-2 * 0.1);
    torch::Tensor mf = m.to(torch::kBFloat16).to(torch::kFloat).lerp(g, 0.1);
    torch::Tensor vf = v.to(torch::kBFloat16).to(torch::kFloat).mul(0.95).addcmul(g, g, 0.05);
    const double bc1 = 1 - std::pow(0.9, step), bc2 = 1 - std::pow(0.95, step);
    ref.addcdiv_(mf, (vf.sqrt() / std::sqrt(bc2)).add_(1e-8), -1e-2 / bc1);
    m = mf.to(torch::kBFloat16).to(torch::kFloat);
    v = vf.to(torch::kBFloat16).to(torch::kFloat);
    EXPECT_TRUE(torch::allclose(w.detach(), ref, 1e-6, 1e-7)) << "step " << step;
  }
  EXPECT_EQ(ours.slot(0).exp_avg.scalar_type(), torch::kBFloat16);
  EXPECT_FALSE(torch::equal(w, f)) << "bf16 moments are not fp32 moments";
  const auto state = ours.state();
  EXPECT_EQ(state.at("exp_avg.w").scalar_type(), torch::kFloat);
  EXPECT_TRUE(torch::equal(state.at("exp_avg.w"), m));
  train::AdamW resumed({{"w", f}}, o);
  resumed.load_state(state);
  EXPECT_TRUE(torch::equal(resumed.state().at("exp_avg_sq.w"), v)) << "bf16-moment state into fp32 moments";
  train::AdamW back({{"w", w}}, narrow);
  back.load_state(full.state());
  EXPECT_TRUE(torch::equal(back.state().at("exp_avg.w"), full.state().at("exp_avg.w").to(torch::kBFloat16).to(torch::kFloat)));
}

// The gradient norm's one-pass sum of squares against ATen's, at lengths around the 16-lane tail.
TEST(AdamW, SquaredNormMatchesATen) {
  torch::manual_seed(4);
  for (int64_t n : {1, 15, 16, 17, 1000, 65537}) {
    const torch::Tensor t = torch::randn({n}) * 3;
    if (!train::squared_norm_cpu_applies(t)) GTEST_SKIP() << "no AVX-512 on this CPU";
    const double want = t.to(torch::kDouble).pow(2).sum().item<double>();
    EXPECT_NEAR(train::squared_norm_cpu(t), want, 1e-12 * want) << n;
  }
}

// ZeRO-1: two optimizers owning complementary element ranges of the same parameters (one range
// splitting a tensor in the middle, one rank owning nothing of another) update exactly like one
// optimizer owning everything, and their state() sums to its state.
TEST(AdamW, ComplementaryRangesEqualTheFullUpdate) {
  torch::manual_seed(1);
  const torch::Tensor w0 = torch::randn({5, 3}), b0 = torch::randn({5});
  cfg::OptimizerConfig o;
  o.weight_decay = 0.1;
  torch::Tensor wf = w0.clone().requires_grad_(), bf = b0.clone().requires_grad_();
  torch::Tensor wa = w0.clone().requires_grad_(), ba = b0.clone().requires_grad_();
  torch::Tensor wb = w0.clone().requires_grad_(), bb = b0.clone().requires_grad_();
  train::AdamW full({{"w", wf}, {"b", bf}}, o), first({{"w", wa}, {"b", ba}}, o), second({{"w", wb}, {"b", bb}}, o);
  first.restrict_to_ranges({{0, 7}, {0, 5}});
  second.restrict_to_ranges({{7, 8}, {0, 0}});
  const torch::Tensor x = torch::randn({4, 3});
  for (int step = 0; step < 4; ++step) {
    for (auto* opt : {&full, &first, &second}) opt->zero_grad();
    for (auto [w, b] : {std::pair{wf, bf}, std::pair{wa, ba}, std::pair{wb, bb}}) (torch::matmul(x, w.t()) + b).pow(2).sum().backward();
    full.step(1e-2);
    first.step(1e-2);
    second.step(1e-2);
    torch::NoGradGuard no_grad;  // the all-gather: each rank's owned elements
    torch::Tensor w = wa.detach().clone();
    w.view(-1).narrow(0, 7, 8).copy_(wb.detach().view(-1).narrow(0, 7, 8));
    EXPECT_TRUE(torch::equal(w, wf.detach())) << "step " << step;
    EXPECT_TRUE(torch::equal(ba.detach(), bf.detach())) << "step " << step;
    wa.copy_(w), wb.copy_(w), bb.copy_(ba);
  }
  const auto sa = first.state(), sb = second.state(), sf = full.state();
  for (const auto& [name, t] : sf) {
    if (name == "step") continue;
    EXPECT_TRUE(torch::equal(sa.at(name) + sb.at(name), t)) << name;
  }
  // Loading full state into a restricted optimizer takes its range.
  train::AdamW again({{"w", wb}, {"b", bb}}, o);
  again.restrict_to_ranges({{7, 8}, {0, 0}});
  again.load_state(sf);
  EXPECT_TRUE(torch::equal(again.state().at("exp_avg.w"), sb.at("exp_avg.w")));
}

TEST(Balancer, BiasUpdateFollowsTheRuleOncePerStep) {
  torch::Tensor bias = torch::zeros({4});
  train::ExpertBalancer balancer({bias}, 0.001, /*freeze_after_tokens=*/1000);
  // Two micro-batches of one optimizer step: loads add up to [10, 0, 5, 5], mean 5.
  balancer.add_counts(0, torch::tensor({6, 0, 2, 2}, torch::kLong));
  balancer.add_counts(0, torch::tensor({4, 0, 3, 3}, torch::kLong));
  const auto stats = balancer.step(/*tokens_seen=*/0);
  EXPECT_TRUE(torch::equal(bias, torch::tensor({-0.001f, 0.001f, 0.0f, 0.0f}))) << bias;
  EXPECT_DOUBLE_EQ(stats[0].max_violation, 1.0);
  EXPECT_EQ(stats[0].load, (std::vector<int64_t>{10, 0, 5, 5}));
  EXPECT_TRUE(torch::equal(balancer.counts(), torch::zeros({1, 4}, torch::kLong))) << "counts reset per step";
  // Frozen once the token budget is reached.
  balancer.add_counts(0, torch::tensor({10, 0, 5, 5}, torch::kLong));
  balancer.step(/*tokens_seen=*/1000);
  EXPECT_TRUE(torch::equal(bias, torch::tensor({-0.001f, 0.001f, 0.0f, 0.0f})));
  // gamma = 0 never moves.
  torch::Tensor still = torch::zeros({4});
  train::ExpertBalancer off({still}, 0.0, 0);
  off.add_counts(0, torch::tensor({10, 0, 5, 5}, torch::kLong));
  off.step(0);
  EXPECT_TRUE(torch::equal(still, torch::zeros({4})));
}

TEST(Losses, MtpWeightZeroIsExactlyTheNoMtpLoss) {
  cfg::Config c;
  c.model = latentmoe::testing::tiny_model_config();
  c.train.seq_aux_loss_alpha = 0;
  torch::manual_seed(5);
  latentmoe::model::DeepSeekV3 with_mtp(c.model);
  cfg::Config no_mtp_cfg = c;
  no_mtp_cfg.model.num_nextn_predict_layers = 0;
  latentmoe::model::DeepSeekV3 without(no_mtp_cfg.model);
  {
    auto source = latentmoe::io::model_state(*with_mtp);
    std::map<std::string, torch::Tensor> main_only;
    for (const auto& [k, v] : source) {
      if (k.rfind("mtp.", 0) != 0) main_only[k] = v;
    }
    latentmoe::io::load_model_state(*without, main_only, "test");
  }
  const torch::Tensor tokens = torch::randint(c.model.vocab_size, {2, 10});
  const auto a = train::compute_losses(with_mtp(tokens.narrow(1, 0, 9)), tokens, c, 0.0);
  const auto b = train::compute_losses(without(tokens.narrow(1, 0, 9), false), tokens, no_mtp_cfg, 0.3);
  EXPECT_EQ(a.total.item<double>(), b.total.item<double>()) << "bit-identical";
  EXPECT_GT(a.mtp, 0.0) << "the MTP loss is still computed and logged";
  // With lambda > 0 the shared head's gradient gains the MTP term: grad = grad_lm + lambda/D * grad_mtp.
  with_mtp->zero_grad();
  train::compute_losses(with_mtp(tokens.narrow(1, 0, 9)), tokens, c, 0.0).total.backward();
  const torch::Tensor g0 = with_mtp->lm_head->weight.grad().clone();
  with_mtp->zero_grad();
  train::compute_losses(with_mtp(tokens.narrow(1, 0, 9)), tokens, c, 0.3).total.backward();
  const torch::Tensor g1 = with_mtp->lm_head->weight.grad().clone();
  with_mtp->zero_grad();
  const auto out = with_mtp(tokens.narrow(1, 0, 9));
  train::cross_entropy(out.mtp_logits[0].reshape({-1, c.model.vocab_size}), tokens.narrow(1, 2, 8).reshape(-1)).backward();
  const torch::Tensor g_mtp = with_mtp->lm_head->weight.grad().clone();
  EXPECT_TRUE(torch::allclose(g1, g0 + 0.3 * g_mtp, 1e-5, 1e-7));
  EXPECT_GT((g1 - g0).abs().max().item<double>(), 0.0);
}

TEST(Checkpointer, CommitMarkerManifestAndPruning) {
  TempDir dir;
  train::Checkpointer ckpt(dir.path().string(), /*keep_last=*/2);
  train::CheckpointData data{{{"w", torch::ones({2})}}, {{"step", torch::tensor({1}, torch::kLong)}}, "{}", "name: x\n"};
  for (int64_t step : {10, 20, 30}) ckpt.save(step, data);
  EXPECT_FALSE(std::filesystem::exists(dir.path() / "step-00000010")) << "keep_last=2 prunes the oldest";
  EXPECT_EQ(ckpt.latest(), (dir.path() / "step-00000030").string());
  // An interrupted save (no marker) is skipped with its reason.
  std::filesystem::remove(dir.path() / "step-00000030" / "COMMITTED");
  std::vector<std::string> skipped;
  EXPECT_EQ(ckpt.latest(&skipped), (dir.path() / "step-00000020").string());
  ASSERT_EQ(skipped.size(), 1u);
  EXPECT_NE(skipped[0].find("step-00000030: no COMMITTED marker (the save was interrupted)"), std::string::npos);
  // A flipped byte fails the integrity check naming the file.
  const auto model_file = dir.path() / "step-00000020" / "model.safetensors";
  {
    std::fstream f(model_file, std::ios::in | std::ios::out | std::ios::binary);
    f.seekp(-1, std::ios::end);
    f.put('\x7f');
  }
  expect_error_contains<train::CheckpointError>([&] { train::Checkpointer::load((dir.path() / "step-00000020").string()); },
                                                {"step-00000020/model.safetensors: SHA-256 mismatch"});
  skipped.clear();
  EXPECT_FALSE(ckpt.latest(&skipped).has_value());
  EXPECT_EQ(skipped.size(), 2u);
}

namespace {
// A tiny model on a synthetic dataset: fast enough for unit tests.
cfg::Config tiny_training_config(const TempDir& dir) {
  cfg::Config c;
  c.model = latentmoe::testing::tiny_model_config();
  c.train.seq_len = 16;
  c.train.global_batch_size = 4;
  c.train.micro_batch_size = 2;
  c.train.steps = 8;
  c.train.eval_batches = 1;
  c.train.eval_interval = 0;
  c.schedule.warmup = 2;
  c.checkpoint.dir = (dir.path() / "ckpt").string();
  c.checkpoint.interval = 0;
  c.logging.dir = (dir.path() / "run").string();
  c.logging.interval = 1000;
  c.data.valid_fraction = 0.1;
  const std::string prefix = (dir.path() / "synthetic").string();
  latentmoe::data::IndexedDatasetWriter w(prefix, latentmoe::data::TokenDtype::u16);
  std::mt19937 rng(3);
  for (int d = 0; d < 60; ++d) {
    std::vector<int32_t> doc;
    for (int i = 0; i < 30 + d % 17; ++i) doc.push_back(static_cast<int32_t>((d * 7 + i * (i % 5)) % 60));
    w.add_document(doc);
  }
  w.finalize();
  c.data.paths = {prefix};
  return c;
}
}  // namespace

TEST(Trainer, NonFiniteLossStopsBeforeTheUpdate) {
  TempDir dir;
  train::Trainer trainer(tiny_training_config(dir));
  const auto before = latentmoe::io::model_state(*trainer.model());
  std::map<std::string, torch::Tensor> snapshot;
  for (const auto& [k, v] : before) snapshot[k] = v.clone();
  ::setenv("LATENTMOE_TEST_NAN_AT_STEP", "1", 1);
  const int code = trainer.run();
  ::unsetenv("LATENTMOE_TEST_NAN_AT_STEP");
  EXPECT_EQ(code, train::kExitNonFinite);
  EXPECT_EQ(trainer.step(), 0);
  for (const auto& [k, v] : latentmoe::io::model_state(*trainer.model())) EXPECT_TRUE(torch::equal(v, snapshot[k])) << k;
}

TEST(Trainer, DeterministicAndLearns) {
  TempDir a_dir, b_dir;
  cfg::Config a_cfg = tiny_training_config(a_dir), b_cfg = tiny_training_config(b_dir);
  for (cfg::Config* c : {&a_cfg, &b_cfg}) {
    c->train.steps = 30;
    c->optimizer.lr = 1e-2;
    c->schedule.min_lr = 1e-3;
  }
  train::Trainer a(a_cfg), b(b_cfg);
  ASSERT_EQ(a.run(), 0);
  ASSERT_EQ(b.run(), 0);
  ASSERT_EQ(a.history().size(), 30u);
  for (size_t i = 0; i < a.history().size(); ++i) EXPECT_EQ(a.history()[i].loss, b.history()[i].loss) << "step " << i + 1;
  EXPECT_LT(a.history().back().lm, a.history().front().lm);
  EXPECT_TRUE(std::filesystem::exists(a_dir.path() / "run" / "metrics.jsonl"));
}

TEST(Trainer, ResumeIsBitExact) {
  TempDir straight_dir, split_dir;
  cfg::Config straight_cfg = tiny_training_config(straight_dir);
  train::Trainer straight(straight_cfg);
  ASSERT_EQ(straight.run(), 0);

  cfg::Config first_cfg = tiny_training_config(split_dir);
  first_cfg.checkpoint.interval = 4;
  {
    train::Trainer first(first_cfg);  // its checkpoint at step 4 is the resume point
    ASSERT_EQ(first.run(), 0);
  }
  const std::string at4 = (split_dir.path() / "ckpt" / "step-00000004").string();
  ASSERT_TRUE(std::filesystem::exists(at4));
  train::Trainer resumed(first_cfg);
  resumed.resume(at4);
  EXPECT_EQ(resumed.step(), 4);
  ASSERT_EQ(resumed.run(), 0);
  ASSERT_EQ(resumed.history().size(), 4u);
  for (size_t i = 0; i < 4; ++i) EXPECT_EQ(resumed.history()[i].loss, straight.history()[4 + i].loss) << "step " << 5 + i;
  const auto p1 = latentmoe::io::model_state(*straight.model()), p2 = latentmoe::io::model_state(*resumed.model());
  for (const auto& [k, v] : p1) EXPECT_TRUE(torch::equal(v, p2.at(k))) << k;
}

TEST(Trainer, MtpLambdaSwitchesAfterTheTokenBudget) {
  TempDir dir;
  cfg::Config c = tiny_training_config(dir);
  c.train.steps = 4;
  c.train.mtp_loss_weight = 0.3;
  c.train.mtp_loss_weight_final = 0.0;
  c.train.mtp_loss_weight_switch_tokens = 2 * c.train.global_batch_size * c.train.seq_len;  // after step 2
  train::Trainer trainer(c);
  ASSERT_EQ(trainer.run(), 0);
  for (const auto& r : trainer.history()) {
    const double lambda = r.step <= 2 ? 0.3 : 0.0;
    EXPECT_NEAR(r.loss, r.lm + lambda * r.mtp + r.balance + r.z, 1e-5) << "step " << r.step;
  }
}

// FIM's pad labels are left out of the mean; a row of nothing but pad (an MTP depth of a padded
// sample) contributes 0, not 0/0. fp32 and the chunked bf16 path agree.
TEST(Losses, IgnoredLabelsAreLeftOutOfTheMean) {
  torch::manual_seed(3);
  const torch::Tensor logits = torch::randn({6, 11}, torch::kFloat);
  const torch::Tensor labels = torch::tensor({int64_t{1}, int64_t{4}, train::kIgnoredLabel, int64_t{7}, train::kIgnoredLabel, int64_t{2}}, torch::kLong);
  const torch::Tensor kept = torch::tensor({int64_t{0}, int64_t{1}, int64_t{3}, int64_t{5}}, torch::kLong);
  const double expected = train::cross_entropy(logits.index_select(0, kept), labels.index_select(0, kept)).item<double>();
  EXPECT_NEAR(train::cross_entropy(logits, labels).item<double>(), expected, 1e-6);
  EXPECT_NEAR(train::cross_entropy(logits.to(torch::kBFloat16), labels).item<double>(), expected, 5e-2);
  torch::Tensor leaf = logits.clone().requires_grad_(true);
  const torch::Tensor none = train::cross_entropy(leaf, torch::full({6}, train::kIgnoredLabel, torch::kLong));
  EXPECT_EQ(none.item<double>(), 0.0);
  none.backward();
  EXPECT_TRUE(torch::isfinite(leaf.grad()).all().item<bool>());
}

// The batch ramp in the trainer: every step's batch is the ramp formula's, and a run stopped
// mid-ramp and resumed is bit-identical to one that was not.
TEST(Trainer, BatchRampResumesBitExactMidRamp) {
  TempDir straight_dir, split_dir;
  const auto ramped = [](const TempDir& d) {
    cfg::Config c = tiny_training_config(d);
    c.train.global_batch_size = 8;
    c.train.batch_ramp = {.start = 2, .increment = 2, .tokens = 200};  // 2, 4, 6 over 200 tokens, then 8
    return c;
  };
  train::Trainer straight(ramped(straight_dir));
  ASSERT_EQ(straight.run(), 0);
  int64_t tokens = 0;
  for (const auto& r : straight.history()) {
    const int64_t expected = tokens >= 200 ? 8 : 2 + (tokens * 3 / 200) * 2;
    EXPECT_EQ(r.global_batch, expected) << "step " << r.step;
    tokens += r.global_batch * 16;
  }
  EXPECT_EQ(straight.tokens_seen(), tokens);
  EXPECT_EQ(straight.history()[2].global_batch, 2);  // the resume point (step 3) is inside the ramp
  EXPECT_EQ(straight.history()[3].global_batch, 4);
  cfg::Config split_cfg = ramped(split_dir);
  split_cfg.checkpoint.interval = 3;
  { train::Trainer first(split_cfg); ASSERT_EQ(first.run(), 0); }
  train::Trainer resumed(split_cfg);
  resumed.resume((split_dir.path() / "ckpt" / "step-00000003").string());
  ASSERT_EQ(resumed.run(), 0);
  ASSERT_EQ(resumed.history().size(), 5u);
  for (size_t i = 0; i < 5; ++i) {
    EXPECT_EQ(resumed.history()[i].global_batch, straight.history()[3 + i].global_batch);
    EXPECT_EQ(resumed.history()[i].loss, straight.history()[3 + i].loss) << "step " << 4 + i;
  }
  const auto p1 = latentmoe::io::model_state(*straight.model()), p2 = latentmoe::io::model_state(*resumed.model());
  for (const auto& [k, v] : p1) EXPECT_TRUE(torch::equal(v, p2.at(k))) << k;
}

namespace {
// Hashes of every file under dir (the source run must stay untouched).
std::map<std::string, std::string> file_hashes(const std::filesystem::path& dir) {
  std::map<std::string, std::string> out;
  for (const auto& e : std::filesystem::recursive_directory_iterator(dir)) {
    if (e.is_regular_file()) out[e.path().string()] = latentmoe::sha256_file_hex(e.path().string());
  }
  return out;
}

// YaRN's inverse frequencies written from the paper's formulas (not the model's code).
std::vector<double> yarn_inv_freq(int64_t dim, double base, double factor, int64_t original, double beta_fast,
                                  double beta_slow) {
  const auto correction_dim = [&](double rotations) {
    return dim * std::log(static_cast<double>(original) / (rotations * 2 * M_PI)) / (2 * std::log(base));
  };
  const double low = std::max(std::floor(correction_dim(beta_fast)), 0.0);
  const double high = std::min(std::ceil(correction_dim(beta_slow)), static_cast<double>(dim - 1));
  std::vector<double> out;
  for (int64_t i = 0; i < dim / 2; ++i) {
    const double extrapolated = 1.0 / std::pow(base, 2.0 * static_cast<double>(i) / static_cast<double>(dim));
    const double ramp = std::clamp((static_cast<double>(i) - low) / std::max(high - low, 1e-3), 0.0, 1.0);
    out.push_back(extrapolated / factor * ramp + extrapolated * (1.0 - ramp));
  }
  return out;
}
}  // namespace

// `train --init-from`: the new stage starts from the previous stage's final weights exactly, with
// its own rotary scaling in effect beyond the first stage's length, and records its lineage.
TEST(Trainer, InitFromStartsTheNextStageFromTheFinalWeights) {
  TempDir first_dir, next_dir;
  cfg::Config first_cfg = tiny_training_config(first_dir);
  first_cfg.name = "stage-1";
  first_cfg.model.max_position_embeddings = 16;
  train::Trainer first(first_cfg);
  ASSERT_EQ(first.run(), 0);
  const std::string source = *first.last_checkpoint();
  const auto before = file_hashes(first_dir.path() / "ckpt");

  cfg::Config next_cfg = tiny_training_config(next_dir);
  next_cfg.name = "stage-2";
  next_cfg.train.seq_len = 64;
  next_cfg.train.global_batch_size = 2;
  next_cfg.train.micro_batch_size = 2;
  next_cfg.train.steps = 2;
  next_cfg.schedule.warmup = 0;
  next_cfg.model.max_position_embeddings = 64;
  next_cfg.model.rope_scaling = {.type = "yarn", .factor = 4.0, .original_max_position_embeddings = 16,
                                 .beta_fast = 32.0, .beta_slow = 1.0, .mscale = 1.0, .mscale_all_dim = 1.0};
  train::Trainer next(next_cfg);
  next.init_from(source);
  EXPECT_EQ(next.step(), 0);
  const auto want = latentmoe::io::model_state(*first.model()), got = latentmoe::io::model_state(*next.model());
  ASSERT_EQ(want.size(), got.size());
  for (const auto& [k, v] : want) EXPECT_TRUE(torch::equal(v, got.at(k))) << k;

  // Every attention layer rotates with the stage's YaRN frequencies, at a position past stage 1's 16.
  const auto& m = next_cfg.model;
  const auto& mla = latentmoe::model::mla_settings(m);
  const std::vector<double> expected = yarn_inv_freq(mla.qk_rope_head_dim, m.rope_theta, 4.0, 16, 32.0, 1.0);
  int layers = 0;
  for (const auto& module : next.model()->modules(false)) {
    const auto attention = std::dynamic_pointer_cast<latentmoe::model::MultiHeadLatentAttentionImpl>(module);
    if (!attention) continue;
    ++layers;
    const auto [cos, sin] = attention->rotary.cos_sin(torch::tensor({40}, torch::kLong));
    for (size_t i = 0; i < expected.size(); ++i) {
      EXPECT_NEAR(cos[0][static_cast<int64_t>(i)].item<double>(), std::cos(40.0 * expected[i]), 1e-5) << "dim " << i;
    }
    EXPECT_GT(attention->softmax_scale, std::pow(mla.qk_nope_head_dim + mla.qk_rope_head_dim, -0.5));  // mscale^2 > 1
  }
  EXPECT_GT(layers, 0);

  ASSERT_EQ(next.run(), 0);
  std::ifstream state_file(*next.last_checkpoint() + "/trainer_state.json");
  const auto state = nlohmann::json::parse(state_file);
  ASSERT_EQ(state.at("lineage").size(), 1u);
  const auto& parent = state.at("lineage")[0];
  EXPECT_EQ(parent.at("stage"), "stage-1");
  EXPECT_EQ(parent.at("checkpoint"), std::filesystem::weakly_canonical(source).string());
  EXPECT_EQ(parent.at("config_sha256"), latentmoe::sha256_file_hex(source + "/config.yaml"));
  EXPECT_EQ(parent.at("step"), 8);
  EXPECT_EQ(state.at("stage").at("name"), "stage-2");
  // AdamW carried: its step count continues from the source's 8; reset starts again at 0.
  EXPECT_EQ(train::Checkpointer::load(*next.last_checkpoint()).optimizer.at("step").item<int64_t>(), 10);
  TempDir reset_dir;
  cfg::Config reset_cfg = next_cfg;
  reset_cfg.train.init_optimizer = "reset";
  reset_cfg.checkpoint.dir = (reset_dir.path() / "ckpt").string();
  reset_cfg.logging.dir = (reset_dir.path() / "run").string();
  train::Trainer reset(reset_cfg);
  reset.init_from(source);
  ASSERT_EQ(reset.run(), 0);
  EXPECT_EQ(train::Checkpointer::load(*reset.last_checkpoint()).optimizer.at("step").item<int64_t>(), 2);
  EXPECT_NE(reset.history()[0].loss, 0.0);
  EXPECT_EQ(reset.history()[0].loss, next.history()[0].loss);  // same weights and data: the first forward agrees
  EXPECT_NE(latentmoe::io::model_state(*reset.model()).begin()->second.sum().item<double>(),
            latentmoe::io::model_state(*next.model()).begin()->second.sum().item<double>());  // the updates differ
  EXPECT_EQ(file_hashes(first_dir.path() / "ckpt"), before);
}

TEST(Trainer, InitFromRefusesAnotherArchitectureACorruptCheckpointOrItsOwnDirectory) {
  TempDir first_dir, next_dir;
  train::Trainer first(tiny_training_config(first_dir));
  ASSERT_EQ(first.run(), 0);
  const std::string source = *first.last_checkpoint();
  {
    cfg::Config other = tiny_training_config(next_dir);
    other.model.num_hidden_layers += 1;
    train::Trainer next(other);
    expect_error_contains<latentmoe::ConfigError>([&] { next.init_from(source); },
                                                  {"the checkpoint is another architecture",
                                                   "model.num_hidden_layers (3 in the checkpoint, 4 in the config)"});
  }
  {
    cfg::Config own = tiny_training_config(first_dir);  // the source's checkpoint.dir
    train::Trainer next(own);
    expect_error_contains<latentmoe::ConfigError>([&] { next.init_from(source); },
                                                  {"checkpoint.dir", "is one of the source run's directories", "give the new stage its own checkpoint.dir"});
  }
  const auto before = file_hashes(first_dir.path() / "ckpt");
  TempDir copy_dir;
  const auto copy = copy_dir.path() / "step-00000008";
  std::filesystem::copy(source, copy, std::filesystem::copy_options::recursive);
  {
    std::fstream f(copy / "model.safetensors", std::ios::in | std::ios::out | std::ios::binary);
    f.seekp(-3, std::ios::end);
    f.put('\x5a');
  }
  train::Trainer next(tiny_training_config(next_dir));
  expect_error_contains<train::CheckpointError>([&] { next.init_from(copy.string()); },
                                                {"model.safetensors"});
  std::filesystem::copy_file(std::filesystem::path(source) / "model.safetensors", copy / "model.safetensors",
                             std::filesystem::copy_options::overwrite_existing);
  std::filesystem::remove(copy / "COMMITTED");  // an interrupted save: never a stage's starting point
  expect_error_contains<train::CheckpointError>([&] { next.init_from(copy.string()); }, {"COMMITTED"});
  EXPECT_EQ(file_hashes(first_dir.path() / "ckpt"), before);
}

// A stage restarted with `--resume auto --init-from SOURCE` continues its own checkpoints (lineage
// kept); they must descend from SOURCE, and a fresh --init-from never writes over them.
TEST(Trainer, InitFromAfterAResumeContinuesOnlyItsOwnStage) {
  TempDir first_dir, other_dir, next_dir;
  train::Trainer first(tiny_training_config(first_dir));
  ASSERT_EQ(first.run(), 0);
  const std::string source = *first.last_checkpoint();
  cfg::Config other_cfg = tiny_training_config(other_dir);
  other_cfg.seed = 99;
  train::Trainer other(other_cfg);
  ASSERT_EQ(other.run(), 0);

  cfg::Config next_cfg = tiny_training_config(next_dir);
  next_cfg.train.steps = 4;
  next_cfg.checkpoint.interval = 2;
  ::setenv("LATENTMOE_TEST_STOP_AFTER_STEP", "2", 1);
  {
    train::Trainer next(next_cfg);
    next.init_from(source);
    EXPECT_EQ(next.run(), train::kExitInterrupted);
  }
  ::unsetenv("LATENTMOE_TEST_STOP_AFTER_STEP");
  {
    train::Trainer again(next_cfg);  // no --resume: the stage already has a checkpoint
    expect_error_contains<latentmoe::ConfigError>([&] { again.init_from(source); },
                                                  {"already holds this stage's committed checkpoint", "--resume auto"});
  }
  {
    train::Trainer wrong(next_cfg);
    wrong.resume("auto");
    expect_error_contains<latentmoe::ConfigError>([&] { wrong.init_from(*other.last_checkpoint()); },
                                                  {"did not start from it", "give this stage a new checkpoint.dir"});
  }
  train::Trainer resumed(next_cfg);
  resumed.resume("auto");
  resumed.init_from(source);
  EXPECT_EQ(resumed.step(), 2);
  ASSERT_EQ(resumed.run(), 0);
  std::ifstream state_file(*resumed.last_checkpoint() + "/trainer_state.json");
  const auto state = nlohmann::json::parse(state_file);
  ASSERT_EQ(state.at("lineage").size(), 1u);  // the lineage survives the resume
  EXPECT_EQ(state.at("lineage")[0].at("checkpoint"), std::filesystem::weakly_canonical(source).string());
}
