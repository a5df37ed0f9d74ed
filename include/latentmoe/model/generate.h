// Autoregressive generation over each attention layer's cache (model/attention.h): greedy, or temperature + top-p sampling
// with a seeded generator (same seed → same tokens).
#pragma once

#include <cstdint>
#include <optional>
#include <vector>

#include "latentmoe/model/deepseek_v3.h"

namespace latentmoe::model {

struct GenerateOptions {
  int64_t max_new_tokens = 32;
  double temperature = 0.0;  // 0 = greedy
  double top_p = 1.0;        // nucleus sampling mass, (0, 1]
  uint64_t seed = 0;
  std::optional<int64_t> stop_token;  // stop after emitting it
};

// Returns the new tokens only. The model is run in eval mode without gradients.
std::vector<int64_t> generate(DeepSeekV3Impl& model, const std::vector<int64_t>& prompt, const GenerateOptions& options);

// Picks the next token from logits [vocab] per the options (exposed for tests).
int64_t sample_next_token(const torch::Tensor& logits, const GenerateOptions& options, at::Generator& generator);

}  // namespace latentmoe::model
