// Whole model: MTP shares the embedding/head tensors, cached generation equals the full forward,
// the cache holds (kv_lora_rank + rope) values per token, determinism of init.
#include <gtest/gtest.h>

#include "latentmoe/model/deepseek_v3.h"
#include "latentmoe/model/init.h"
#include "latentmoe/model/mla.h"
#include "model_fixtures.h"

namespace model = latentmoe::model;

TEST(Model, OutputShapesAndRouting) {
  torch::manual_seed(0);
  auto cfg = latentmoe::testing::tiny_model_config();
  model::DeepSeekV3 m(cfg);
  const torch::Tensor ids = torch::randint(cfg.vocab_size, {2, 9});
  const model::ModelOutput out = m(ids);
  EXPECT_EQ(out.logits.sizes(), (std::vector<int64_t>{2, 9, cfg.vocab_size}));
  ASSERT_EQ(out.mtp_logits.size(), 1u);
  EXPECT_EQ(out.mtp_logits[0].sizes(), (std::vector<int64_t>{2, 8, cfg.vocab_size}));
  EXPECT_EQ(out.routing.size(), 3u) << "2 main MoE blocks + 1 MTP block";
  EXPECT_EQ(out.routing[0].expert_ids.sizes(), (std::vector<int64_t>{18, cfg.num_experts_per_tok}));
}

TEST(Model, MtpSharesEmbeddingAndHead) {
  torch::manual_seed(1);
  auto cfg = latentmoe::testing::tiny_model_config();
  model::DeepSeekV3 m(cfg);
  for (const auto& p : m->named_parameters()) {
    if (p.key().rfind("mtp.", 0) == 0) {
      EXPECT_EQ(p.key().find("embed"), std::string::npos) << p.key();
      EXPECT_EQ(p.key().find("head"), std::string::npos) << p.key();
    }
  }
  const torch::Tensor ids = torch::randint(cfg.vocab_size, {1, 7});
  // Gradient of the MTP logits alone reaches the main head and embedding: same tensors.
  m(ids).mtp_logits[0].pow(2).sum().backward();
  EXPECT_GT(m->lm_head->weight.grad().abs().sum().item<double>(), 0);
  const torch::Tensor emb_grad = m->model->embed_tokens->weight.grad();
  // MTP depth 1 embeds tokens 1..6 (and, through h, the main model embeds 0..5).
  EXPECT_GT(emb_grad[ids[0][6].item<int64_t>()].abs().sum().item<double>(), 0);
  // Gradients add: main + MTP loss gives the sum of the separate gradients.
  m->zero_grad();
  auto out = m(ids);
  (out.logits.pow(2).sum() + out.mtp_logits[0].pow(2).sum()).backward();
  const torch::Tensor both = m->lm_head->weight.grad().clone();
  m->zero_grad();
  m(ids).logits.pow(2).sum().backward();
  const torch::Tensor main_only = m->lm_head->weight.grad().clone();
  m->zero_grad();
  m(ids).mtp_logits[0].pow(2).sum().backward();
  const torch::Tensor mtp_only = m->lm_head->weight.grad().clone();
  EXPECT_TRUE(torch::allclose(both, main_only + mtp_only, 1e-5, 1e-7));
}

// Logits of a cached decode: the prompt in one call, then one token per call.
static torch::Tensor logits_prompt_then_one_at_a_time(model::DeepSeekV3& m, const torch::Tensor& ids, int64_t prompt_length,
                                                      std::vector<std::unique_ptr<model::AttentionCache>>& caches) {
  std::vector<torch::Tensor> pieces{m(ids.narrow(1, 0, prompt_length), false, &caches).logits};
  for (int64_t t = prompt_length; t < ids.size(1); ++t) pieces.push_back(m(ids.narrow(1, t, 1), false, &caches).logits);
  return torch::cat(pieces, 1);
}

TEST(Model, CachedGenerationEqualsFullForward) {
  torch::manual_seed(2);
  auto cfg = latentmoe::testing::tiny_model_config();
  cfg.rope_scaling.type = "yarn";
  cfg.rope_scaling.factor = 4.0;
  cfg.rope_scaling.original_max_position_embeddings = 8;
  cfg.rope_scaling.mscale_all_dim = 0.707;
  for (bool q_lora : {true, false}) {
    if (!q_lora) model::mla_settings(cfg).q_lora_rank.reset();
    model::DeepSeekV3 m(cfg);
    torch::NoGradGuard no_grad;
    const int64_t batch = 2, seq = 11;
    const torch::Tensor ids = torch::randint(cfg.vocab_size, {batch, seq});
    const torch::Tensor full = m(ids, /*with_mtp=*/false).logits;
    auto caches = m->make_caches(batch, seq, torch::TensorOptions(torch::kFloat));
    const torch::Tensor cached = logits_prompt_then_one_at_a_time(m, ids, /*prompt_length=*/4, caches);
    EXPECT_LE((cached - full).abs().max().item<double>(), 1e-4) << "q_lora " << q_lora;
    EXPECT_EQ(caches[0]->length, seq);
    EXPECT_EQ(caches[0]->bytes_per_token(),
              (model::mla_settings(cfg).kv_lora_rank + model::mla_settings(cfg).qk_rope_head_dim) * 4);
  }
}

// The same through GQA's key/value cache, with more query heads than key/value heads.
TEST(Model, GqaCachedGenerationMatchesFullForward) {
  torch::manual_seed(3);
  const auto cfg = latentmoe::testing::tiny_qwen3_moe_config();
  model::DeepSeekV3 m(cfg);
  torch::NoGradGuard no_grad;
  const int64_t batch = 2, seq = 9;
  const torch::Tensor ids = torch::randint(cfg.vocab_size, {batch, seq});
  const torch::Tensor full = m(ids, /*with_mtp=*/false).logits;
  auto caches = m->make_caches(batch, seq, torch::TensorOptions(torch::kFloat));
  const torch::Tensor cached = logits_prompt_then_one_at_a_time(m, ids, /*prompt_length=*/3, caches);
  EXPECT_LE((cached - full).abs().max().item<double>(), 1e-4);
  EXPECT_EQ(caches[0]->length, seq);
  EXPECT_EQ(caches[0]->bytes_per_token(), 2 * 2 * 8 * 4) << "keys and values of 2 heads x 8 dims in fp32";
  EXPECT_TRUE(m->named_parameters().contains("model.layers.0.self_attn.q_norm.weight"));
  EXPECT_TRUE(m->named_parameters().contains("model.layers.1.mlp.gate.weight"));
  EXPECT_FALSE(m->named_parameters().contains("model.layers.1.mlp.shared_experts.up_proj.weight"));
}

// A module whose parameters no one initializes is an error naming it, not a silent 1.0.
TEST(Model, ResetFailsOnAModuleThatDoesNotInitializeItsParameters) {
  struct Unowned : torch::nn::Module {
    Unowned() { register_parameter("scale", torch::zeros({3})); }
  };
  torch::nn::Module root;
  root.register_module("odd", std::make_shared<Unowned>());
  try {
    model::reset_module_tree(root, 0.02, 1);
    FAIL() << "expected an error";
  } catch (const std::logic_error& e) {
    EXPECT_NE(std::string(e.what()).find("module 'odd'"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("model::ParameterInit"), std::string::npos) << e.what();
  }
}

TEST(Model, CacheBytesPerTokenForV3Shapes) {
  latentmoe::config::ModelConfig v3;
  model::mla_settings(v3).kv_lora_rank = 512;
  model::mla_settings(v3).qk_rope_head_dim = 64;
  model::LatentKVCache cache;
  cache.allocate(1, 2, model::mla_settings(v3).kv_lora_rank, model::mla_settings(v3).qk_rope_head_dim,
                 torch::TensorOptions(torch::kBFloat16));
  EXPECT_EQ(cache.bytes_per_token(), 576 * 2);
}

TEST(Model, InitIsDeterministicAndUsesInitStd) {
  auto cfg = latentmoe::testing::tiny_model_config();
  cfg.init_std = 0.02;
  cfg.hidden_size = 256;
  cfg.vocab_size = 512;
  torch::manual_seed(42);
  model::DeepSeekV3 a(cfg);
  torch::manual_seed(42);
  model::DeepSeekV3 b(cfg);
  auto pa = a->named_parameters(), pb = b->named_parameters();
  for (const auto& p : pa) EXPECT_TRUE(torch::equal(p.value(), pb[p.key()])) << p.key();
  EXPECT_NEAR(a->model->embed_tokens->weight.std().item<double>(), 0.02, 0.001);
  EXPECT_TRUE(torch::equal(a->model->norm->weight, torch::ones({256})));
}

// Initial weights are keyed by (seed, global name): a rank that builds only its routed experts
// draws exactly the one-process weights, whatever the global RNG did before; the meta build has
// the same names and shapes without memory.
TEST(Model, InitIsLayoutIndependentAndTheMetaBuildHasTheSameTensors) {
  const auto cfg = latentmoe::testing::tiny_model_config();
  model::DeepSeekV3 whole(cfg, model::ModelBuild{.seed = 7});
  torch::manual_seed(123);
  model::DeepSeekV3 part(cfg, model::ModelBuild{.seed = 7, .experts = {.first = 4, .count = 4}});
  auto all = whole->named_parameters();
  size_t compared = 0;
  for (const auto& p : part->named_parameters()) {
    ASSERT_TRUE(all.contains(p.key())) << p.key();
    EXPECT_TRUE(torch::equal(p.value(), all[p.key()])) << p.key();
    ++compared;
  }
  const auto moe_layers = static_cast<size_t>(cfg.num_hidden_layers - cfg.first_k_dense_replace + cfg.num_nextn_predict_layers);
  EXPECT_EQ(compared + moe_layers * 4 * 3, all.size()) << "each MoE layer (main and MTP) lacks 4 experts of 3 tensors";
  EXPECT_FALSE(part->named_parameters().contains("model.layers.1.mlp.experts.0.up_proj.weight"));
  EXPECT_TRUE(part->named_parameters().contains("model.layers.1.mlp.experts.4.up_proj.weight"));
  EXPECT_EQ(model::routed_expert_parameter_names(*part).count("model.layers.1.mlp.experts.4.up_proj.weight"), 1u);
  EXPECT_EQ(model::routed_expert_parameter_names(*part).count("model.layers.1.mlp.shared_experts.up_proj.weight"), 0u);
  model::DeepSeekV3 other_seed(cfg, model::ModelBuild{.seed = 8});
  EXPECT_FALSE(torch::equal(other_seed->lm_head->weight, whole->lm_head->weight));
  EXPECT_FALSE(torch::equal(whole->model->embed_tokens->weight.flatten().narrow(0, 0, 64),
                            whole->lm_head->weight.flatten().narrow(0, 0, 64)))
      << "each tensor has its own stream";
  const model::BuildOnMeta on_meta;
  model::DeepSeekV3 shapes(cfg, model::ModelBuild{.seed = 7});
  const auto meta = shapes->named_parameters();
  ASSERT_EQ(meta.size(), all.size());
  for (const auto& p : meta) {
    EXPECT_TRUE(p.value().is_meta()) << p.key();
    EXPECT_EQ(p.value().sizes(), all[p.key()].sizes()) << p.key();
  }
}

// The CPU attention's padded-value path (from kPadValueFromSeq positions) equals plain SDPA,
// forward and backward, at a sequence length that is not a multiple of any block size.
TEST(Model, CausalAttentionWithPaddedValuesEqualsPlainSdpa) {
  at::manual_seed(7);
  for (auto dtype : {at::kFloat, at::kBFloat16}) {
    for (int64_t seq : {model::kPadValueFromSeq, model::kPadValueFromSeq + 45}) {
      const at::Tensor q0 = at::randn({2, 3, seq, 48}).to(dtype), k0 = at::randn({2, 3, seq, 48}).to(dtype);
      const at::Tensor v0 = at::randn({2, 3, seq, 32}).to(dtype), g = at::randn({2, 3, seq, 32}).to(dtype);
      std::vector<at::Tensor> grads[2];
      at::Tensor outs[2];
      for (int path = 0; path < 2; ++path) {
        at::Tensor q = q0.clone().requires_grad_(), k = k0.clone().requires_grad_(), v = v0.clone().requires_grad_();
        outs[path] = path == 0 ? model::causal_attention(q, k, v, 0.2)
                               : at::scaled_dot_product_attention(q, k, v, {}, 0.0, /*is_causal=*/true, 0.2);
        outs[path].backward(g);
        grads[path] = {q.grad(), k.grad(), v.grad()};
      }
      const double tolerance = dtype == at::kFloat ? 1e-5 : 1e-2;
      const auto rel = [](const at::Tensor& a, const at::Tensor& b) {
        return ((a.to(at::kFloat) - b.to(at::kFloat)).norm() / b.to(at::kFloat).norm().clamp_min(1e-12)).item<double>();
      };
      EXPECT_LE(rel(outs[0], outs[1]), tolerance) << dtype << " seq " << seq;
      for (size_t i = 0; i < 3; ++i) EXPECT_LE(rel(grads[0][i], grads[1][i]), tolerance) << dtype << " seq " << seq << " grad " << i;
    }
  }
}
