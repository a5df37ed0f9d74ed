// Generation: one prefill over the prompt, then one token per step through each attention layer's
// own cache (AttentionCache: MLA keeps the latent, GQA the keys and values).
#include "latentmoe/model/generate.h"

#include <ATen/CPUGeneratorImpl.h>

namespace latentmoe::model {

int64_t sample_next_token(const torch::Tensor& logits, const GenerateOptions& options, at::Generator& generator) {
  const torch::Tensor scores = logits.to(torch::kFloat);
  if (options.temperature <= 0.0) return scores.argmax().item<int64_t>();
  torch::Tensor probs = torch::softmax(scores / options.temperature, -1);
  if (options.top_p < 1.0) {
    auto [sorted, order] = probs.sort(/*dim=*/-1, /*descending=*/true);
    // Keep the smallest prefix whose mass reaches top_p (the first token is always kept).
    const torch::Tensor before = sorted.cumsum(-1) - sorted;
    sorted = sorted.masked_fill(before >= options.top_p, 0.0);
    probs = torch::zeros_like(probs).scatter_(-1, order, sorted);
  }
  return at::multinomial(probs, 1, /*replacement=*/false, generator).item<int64_t>();
}

std::vector<int64_t> generate(DeepSeekV3Impl& model, const std::vector<int64_t>& prompt, const GenerateOptions& options) {
  TORCH_CHECK(!prompt.empty(), "generate: the prompt needs at least one token");
  TORCH_CHECK(options.top_p > 0.0 && options.top_p <= 1.0, "generate: top_p must be in (0, 1], got ", options.top_p);
  torch::NoGradGuard no_grad;
  const bool was_training = model.is_training();
  model.eval();
  const config::ModelConfig& cfg = model.cfg;
  const int64_t total = static_cast<int64_t>(prompt.size()) + options.max_new_tokens;
  TORCH_CHECK(total <= cfg.max_position_embeddings, "generate: prompt + max tokens = ", total,
              " exceeds model.max_position_embeddings = ", cfg.max_position_embeddings);
  const auto device = model.lm_head->weight.device();
  std::vector<std::unique_ptr<AttentionCache>> caches = model.make_caches(1, total, model.lm_head->weight.options());
  at::Generator generator = at::make_generator<at::CPUGeneratorImpl>(options.seed);

  std::vector<int64_t> produced;
  torch::Tensor input = torch::tensor(prompt, torch::kLong).view({1, -1}).to(device);
  for (int64_t step = 0; step < options.max_new_tokens; ++step) {
    const ModelOutput out = model.forward(input, /*with_mtp=*/false, &caches);
    const int64_t next = sample_next_token(out.logits[0][-1].cpu(), options, generator);
    produced.push_back(next);
    if (options.stop_token && next == *options.stop_token) break;
    input = torch::tensor({next}, torch::kLong).view({1, 1}).to(device);
  }
  model.train(was_training);
  return produced;
}

}  // namespace latentmoe::model
