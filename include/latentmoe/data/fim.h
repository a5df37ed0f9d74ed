// Fill-in-the-middle (FIM), as Megatron's GPT FIM dataset and DeepSeek-V3 (PSM at rate 0.1) do it:
// each document segment of a training sample (segments end at EOS) is, with probability
// data.fim_rate, decoded to text, cut at two uniformly drawn character positions into prefix,
// middle and suffix, re-encoded and arranged as
//   PSM: <prefix> prefix <suffix> suffix <middle> middle
//   SPM: <prefix> <suffix> suffix <middle> prefix middle   (with probability data.fim_spm_rate)
// The sample is then truncated or padded (with the pad token, excluded from the loss) back to
// its length. Draws are keyed by (seed, global sample index): no RNG state, resume stays exact.
// No torch headers.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "latentmoe/data/tokenizer.h"

namespace latentmoe::data {

struct FimTokens {
  int32_t prefix = -1, suffix = -1, middle = -1, pad = -1;
};

// The tokenizer's FIM special tokens: StarCoder/Megatron names (<fim_prefix>, <fim_suffix>,
// <fim_middle>, <fim_pad>) or DeepSeek's (<｜fim▁begin｜>, <｜fim▁hole｜>, <｜fim▁end｜>,
// <｜▁pad▁｜>). Throws ConfigError naming the tokenizer file and the missing tokens.
FimTokens find_fim_tokens(const Tokenizer& tokenizer);

class FimTransform {
 public:
  FimTransform(std::shared_ptr<const Tokenizer> tokenizer, double rate, double spm_rate, uint64_t seed);
  const FimTokens& tokens() const { return tokens_; }
  int32_t eos() const { return eos_; }
  // Same length out as in. A segment whose text is not whole UTF-8 (cut mid-character at a
  // sample edge), is empty, or holds ids the tokenizer cannot decode stays as it is.
  std::vector<int32_t> apply(const std::vector<int32_t>& sample, int64_t global_index) const;

 private:
  std::vector<int32_t> permute(const std::vector<int32_t>& segment, uint64_t& state) const;

  std::shared_ptr<const Tokenizer> tokenizer_;
  FimTokens tokens_;
  int32_t eos_ = -1;
  double rate_, spm_rate_;
  uint64_t seed_;
};

}  // namespace latentmoe::data
