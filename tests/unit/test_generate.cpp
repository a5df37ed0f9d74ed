// Sampling rules and seeded generation.
#include <ATen/CPUGeneratorImpl.h>
#include <gtest/gtest.h>

#include "latentmoe/model/generate.h"
#include "model_fixtures.h"

namespace model = latentmoe::model;

TEST(Generate, GreedyAndTopPEdgeCases) {
  const torch::Tensor logits = torch::tensor({0.1f, 3.0f, 2.9f, -1.0f});
  at::Generator gen = at::make_generator<at::CPUGeneratorImpl>(0);
  EXPECT_EQ(model::sample_next_token(logits, {.temperature = 0.0}, gen), 1);
  // A tiny nucleus keeps only the most likely token, whatever the temperature.
  for (int i = 0; i < 20; ++i) EXPECT_EQ(model::sample_next_token(logits, {.temperature = 5.0, .top_p = 1e-6}, gen), 1);
  // top_p 0.9 over {0.5, 0.45, 0.05}: the 0.05 token is never drawn.
  const torch::Tensor three = torch::log(torch::tensor({0.5f, 0.45f, 0.05f}));
  for (int i = 0; i < 200; ++i) EXPECT_NE(model::sample_next_token(three, {.temperature = 1.0, .top_p = 0.9}, gen), 2);
}

TEST(Generate, SeededSamplingIsReproducibleAndGreedyMatchesArgmax) {
  torch::manual_seed(3);
  auto cfg = latentmoe::testing::tiny_model_config();
  model::DeepSeekV3 m(cfg);
  const std::vector<int64_t> prompt{4, 8, 15};
  const model::GenerateOptions sampled{.max_new_tokens = 6, .temperature = 1.0, .top_p = 0.95, .seed = 9};
  EXPECT_EQ(model::generate(*m, prompt, sampled), model::generate(*m, prompt, sampled));
  const auto greedy = model::generate(*m, prompt, {.max_new_tokens = 3});
  ASSERT_EQ(greedy.size(), 3u);
  // The first greedy token is the argmax of a plain forward over the prompt.
  torch::NoGradGuard g;
  m->eval();
  const auto logits = m(torch::tensor(prompt).view({1, -1}), false).logits;
  EXPECT_EQ(greedy[0], logits[0][-1].argmax().item<int64_t>());
  const auto stopped = model::generate(*m, prompt, {.max_new_tokens = 5, .stop_token = greedy[0]});
  EXPECT_EQ(stopped, std::vector<int64_t>{greedy[0]});
  EXPECT_THROW(model::generate(*m, {}, {}), c10::Error);
}
