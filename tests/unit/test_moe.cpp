// The permuted MoE equals a per-token loop over its chosen experts, forward and backward.
#include <gtest/gtest.h>

#include "latentmoe/config/loader.h"
#include "latentmoe/model/deepseek_v3.h"
#include "latentmoe/model/layer_registry.h"
#include "latentmoe/model/moe.h"
#include "latentmoe/model/param_count.h"
#include "latentmoe/util/error.h"
#include "model_fixtures.h"

namespace model = latentmoe::model;

namespace {
// fp32 results of different summation orders: compare relative to the tensor's scale.
::testing::AssertionResult close_at_scale(const torch::Tensor& got, const torch::Tensor& want) {
  const double diff = (got - want).abs().max().item<double>();
  const double scale = std::max(1.0, want.abs().max().item<double>());
  if (diff <= 1e-5 * scale) return ::testing::AssertionSuccess();
  return ::testing::AssertionFailure() << "max |diff| " << diff << " at scale " << scale;
}

// The model.ffn.type 'deepseek_moe' layer of cfg, with cfg's router.
model::DeepSeekMoE deepseek_moe(const latentmoe::config::ModelConfig& cfg) {
  return model::DeepSeekMoE(model::DeepSeekMoEOptions::from_config(cfg), model::Router(model::make_router(cfg)));
}

torch::Tensor loop_reference(model::DeepSeekMoE& moe, const torch::Tensor& tokens, const model::RouterOutput& routing) {
  std::vector<torch::Tensor> rows;
  for (int64_t t = 0; t < tokens.size(0); ++t) {
    const torch::Tensor x = tokens[t].unsqueeze(0);
    torch::Tensor y = moe->shared_experts(x);
    for (int64_t j = 0; j < routing.expert_ids.size(1); ++j) {
      const int64_t e = routing.expert_ids[t][j].item<int64_t>();
      y = y + routing.gate_weights[t][j] * moe->expert(e).forward(x);
    }
    rows.push_back(y);
  }
  return torch::cat(rows, 0);
}
}  // namespace

TEST(MoE, EqualsPerTokenLoopForwardAndBackward) {
  torch::manual_seed(11);
  auto cfg = latentmoe::testing::tiny_model_config();
  model::DeepSeekMoE moe = deepseek_moe(cfg);
  for (auto& p : moe->parameters()) {
    torch::NoGradGuard g;
    p.normal_(0, 0.3);
  }
  for (int64_t tokens : {1, 7, 19}) {
    const torch::Tensor x = torch::randn({tokens, cfg.hidden_size}, torch::requires_grad());
    const torch::Tensor probe = torch::randn({tokens, cfg.hidden_size});
    moe->zero_grad();
    const model::MoEOutput fast = moe(x);
    (fast.hidden * probe).sum().backward();
    const torch::Tensor fast_x_grad = x.grad().clone();
    std::vector<torch::Tensor> fast_grads;
    for (auto& p : moe->parameters()) fast_grads.push_back(p.grad().defined() ? p.grad().clone() : torch::zeros_like(p));

    x.mutable_grad().reset();
    moe->zero_grad();
    const model::RouterOutput routing = moe->gate(x);
    const torch::Tensor reference = loop_reference(moe, x, routing);
    (reference * probe).sum().backward();
    EXPECT_TRUE(close_at_scale(fast.hidden, reference)) << tokens << " tokens";
    EXPECT_TRUE(close_at_scale(fast_x_grad, x.grad()));
    size_t i = 0;
    for (auto& p : moe->parameters()) {
      const torch::Tensor g = p.grad().defined() ? p.grad() : torch::zeros_like(p);
      EXPECT_TRUE(close_at_scale(fast_grads[i], g)) << "parameter " << i;
      ++i;
    }
    EXPECT_EQ(fast.routing.expert_counts.sum().item<int64_t>(), tokens * cfg.num_experts_per_tok);
  }
}

TEST(MoE, ExpertWithNoTokensGetsNoGradient) {
  auto cfg = latentmoe::testing::tiny_model_config();
  model::deepseek_router_settings(cfg).n_group = 1;
  model::deepseek_router_settings(cfg).topk_group = 1;
  cfg.num_experts_per_tok = 1;
  model::DeepSeekMoE moe = deepseek_moe(cfg);
  {
    torch::NoGradGuard g;
    for (auto& p : moe->parameters()) p.normal_(0, 0.3);
    moe->gate->e_score_correction_bias.fill_(-10.0);
    moe->gate->e_score_correction_bias[5] = 10.0;  // every token picks expert 5
  }
  const model::MoEOutput out = moe(torch::randn({6, cfg.hidden_size}));
  out.hidden.sum().backward();
  EXPECT_EQ(out.routing.expert_counts[5].item<int64_t>(), 6);
  // As with a per-expert loop: an expert that did not run has no gradient (AdamW skips it).
  EXPECT_FALSE(moe->expert(0).up_proj->weight.grad().defined());
  EXPECT_FALSE(moe->expert(0).down_proj->weight.grad().defined());
  EXPECT_GT(moe->expert(5).up_proj->weight.grad().abs().sum().item<double>(), 0);
  EXPECT_GT(moe->expert(5).gate_proj->weight.grad().abs().sum().item<double>(), 0);
  EXPECT_GT(moe->expert(5).down_proj->weight.grad().abs().sum().item<double>(), 0);
}

// The per-expert parameters are views into the stacked weights the grouped GEMMs read: an
// in-place update of a parameter (the optimizer's) is what the next forward uses, and a
// parameter whose storage was replaced is stacked again rather than silently ignored.
TEST(MoE, ExpertParametersAreViewsOfTheStackedWeights) {
  torch::manual_seed(6);
  auto cfg = latentmoe::testing::tiny_model_config();
  model::DeepSeekMoE moe = deepseek_moe(cfg);
  const int64_t width = model::deepseek_moe_settings(cfg).moe_intermediate_size;
  for (int64_t e = 0; e < cfg.n_routed_experts; ++e) {
    EXPECT_EQ(moe->expert(e).gate_proj->weight.data_ptr(), moe->experts_gate_up[e].data_ptr()) << e;
    EXPECT_EQ(moe->expert(e).up_proj->weight.data_ptr(), moe->experts_gate_up[e][width].data_ptr()) << e;
    EXPECT_EQ(moe->expert(e).down_proj->weight.data_ptr(), moe->experts_down[e].data_ptr()) << e;
  }
  const torch::Tensor x = torch::randn({9, cfg.hidden_size});
  const model::RouterOutput routing = moe->gate(x);
  {
    torch::NoGradGuard g;
    moe->expert(1).up_proj->weight.mul_(3.0);
    moe->expert(2).down_proj->weight.set_data(moe->expert(2).down_proj->weight.clone().mul_(-1.0));
  }
  const torch::Tensor fast = moe->routed_experts(x, routing);
  torch::Tensor loop = torch::zeros_like(x);
  for (int64_t t = 0; t < x.size(0); ++t) {
    for (int64_t j = 0; j < routing.expert_ids.size(1); ++j) {
      const int64_t e = routing.expert_ids[t][j].item<int64_t>();
      loop[t] += routing.gate_weights[t][j] * moe->expert(e).forward(x[t].unsqueeze(0))[0];
    }
  }
  EXPECT_TRUE(close_at_scale(fast, loop));
  EXPECT_EQ(moe->expert(2).down_proj->weight.data_ptr(), moe->experts_down[2].data_ptr());  // stacked again
}

// Expert parallelism builds a contiguous range of experts under their global names; that module
// computes exactly what the full one computes for those experts.
TEST(MoE, HeldExpertsKeepGlobalNamesAndWeights) {
  torch::manual_seed(5);
  auto cfg = latentmoe::testing::tiny_model_config();
  const int64_t n = cfg.n_routed_experts, first = n / 2, count = n / 2;
  const auto held = [&](int64_t from, int64_t experts) {
    return model::DeepSeekMoE(model::DeepSeekMoEOptions::from_config(cfg).held({.first = from, .count = experts}),
                              model::Router(model::make_router(cfg)));
  };
  model::DeepSeekMoE full = deepseek_moe(cfg), part = held(first, count);
  {
    torch::NoGradGuard g;
    for (auto& p : part->named_parameters()) p.value().copy_(full->named_parameters()[p.key()]);
  }
  EXPECT_EQ(part->first_local_expert(), first);
  EXPECT_EQ(part->local_expert_count(), count);
  int64_t expert_tensors = 0;
  for (const auto& p : part->named_parameters()) {
    if (p.key().rfind("experts.", 0) != 0) continue;
    ++expert_tensors;
    const int64_t e = std::stoll(p.key().substr(8, p.key().find('.', 8) - 8));
    EXPECT_GE(e, first) << p.key();
    EXPECT_TRUE(torch::equal(p.value(), full->named_parameters()[p.key()])) << p.key();
  }
  EXPECT_EQ(expert_tensors, count * 3);
  EXPECT_THROW(part->expert(0), std::out_of_range);
  EXPECT_THROW(held(first, n), c10::Error) << "experts beyond the routed ones";
  const torch::Tensor x = torch::randn({3, cfg.hidden_size});
  EXPECT_TRUE(torch::equal(part->expert(n - 1).forward(x), full->expert(n - 1).forward(x)));
}

// model.ffn.type is a registry family: a type registered here (both halves, as a new source file
// would) is built by the decoder blocks, counted exactly, initialized and trained through, and
// its keys are checked like any other section's. The test type runs one SwiGLU of `width` per
// token beside its router (a stand-in for a research MoE design).
namespace {
struct SwigluTestSettings : latentmoe::config::LayerSettingsOf<SwigluTestSettings> {
  int64_t width = 12;
  void describe(latentmoe::config::FieldVisitor& v) override { v.field({"width", &width, "SwiGLU width"}); }
};

class SwigluTestFfnImpl : public model::MoELayer {
 public:
  SwigluTestFfnImpl(int64_t hidden, int64_t width, model::Router router) {
    gate = register_module("gate", std::move(router));
    mlp = register_module("ffn", model::MLP(model::MLPOptions(hidden, width)));
  }
  model::MoEOutput forward(const torch::Tensor& x) override {
    const torch::Tensor tokens = x.reshape({-1, x.size(-1)});
    return {mlp(tokens).view(x.sizes()), gate(tokens)};
  }
  void set_selective_recompute(bool on) override { mlp->recompute_activation = on; }
  model::Router gate{nullptr};
  model::MLP mlp{nullptr};
};

const bool swiglu_test_registered = [] {
  latentmoe::config::register_layer_type(
      {.family = "ffn",
       .name = "swiglu_test",
       .doc = "test type",
       .make_settings = [] { return std::make_unique<SwigluTestSettings>(); },
       .count = [](const latentmoe::config::ModelConfig& m) -> latentmoe::config::LayerCounts {
         return {.parameters = 3 * m.hidden_size * m.ffn.settings<SwigluTestSettings>().width};
       },
       .validate = nullptr});
  return model::register_ffn("swiglu_test", [](const latentmoe::config::ModelConfig& cfg, const model::MoEBuild&) {
    return std::make_shared<SwigluTestFfnImpl>(cfg.hidden_size, cfg.ffn.settings<SwigluTestSettings>().width,
                                               model::Router(model::make_router(cfg)));
  });
}();
}  // namespace

TEST(MoE, AnFfnTypeRegisteredOutsideTheModelIsBuiltCountedAndTrained) {
  ASSERT_TRUE(swiglu_test_registered);
  latentmoe::config::Config c;
  c.model = latentmoe::testing::tiny_model_config();
  latentmoe::config::apply_override(c, "model.ffn.type=swiglu_test");
  latentmoe::config::apply_override(c, "model.ffn.width=20");
  EXPECT_THROW(latentmoe::config::apply_override(c, "model.ffn.moe_intermediate_size=8"), latentmoe::ConfigError);
  torch::manual_seed(3);
  model::DeepSeekV3 m(c.model);
  const auto params = m->named_parameters();
  EXPECT_TRUE(params.contains("model.layers.1.mlp.ffn.up_proj.weight"));
  EXPECT_EQ(params["model.layers.1.mlp.ffn.up_proj.weight"].size(0), 20);
  EXPECT_FALSE(params.contains("model.layers.1.mlp.experts.0.up_proj.weight"));
  EXPECT_TRUE(params.contains("model.layers.0.mlp.up_proj.weight")) << "the dense leading block is unchanged";
  int64_t built = 0;
  for (const auto& p : params) {
    if (p.key().rfind("mtp.", 0) != 0) built += p.value().numel();
  }
  EXPECT_EQ(model::count_parameters(c.model).total, built);
  EXPECT_GT(params["model.layers.1.mlp.ffn.up_proj.weight"].abs().sum().item<double>(), 0) << "initialized";

  const torch::Tensor ids = torch::randint(0, c.model.vocab_size, {2, 5});
  const model::ModelOutput out = m->forward(ids, /*with_mtp=*/false);
  ASSERT_EQ(out.routing.size(), static_cast<size_t>(c.model.num_hidden_layers - c.model.first_k_dense_replace));
  out.logits.sum().backward();
  EXPECT_TRUE(params["model.layers.1.mlp.ffn.down_proj.weight"].grad().defined());
}
