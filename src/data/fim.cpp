// Fill-in-the-middle sample permutation (see fim.h).
#include "latentmoe/data/fim.h"

#include <fmt/format.h>
#include <fmt/ranges.h>

#include <algorithm>

#include "latentmoe/util/error.h"
#include "latentmoe/util/hash.h"
#include "latentmoe/util/utf8.h"

namespace latentmoe::data {

namespace {
struct FimNames {
  const char *prefix, *suffix, *middle, *pad;
};
constexpr FimNames kFimNames[] = {
    {"<fim_prefix>", "<fim_suffix>", "<fim_middle>", "<fim_pad>"},
    {"<｜fim▁begin｜>", "<｜fim▁hole｜>", "<｜fim▁end｜>", "<｜▁pad▁｜>"},
};

// Uniform in [0, 1) from a splitmix64-style stream.
double next_unit(uint64_t& state) {
  state = mix64(state, 0x5851f42d4c957f2dull);
  return static_cast<double>(state >> 11) * 0x1.0p-53;
}

// Byte offsets at which each UTF-8 character starts, plus the end.
std::vector<size_t> character_starts(const std::string& text) {
  std::vector<size_t> starts;
  for (size_t i = 0; i < text.size(); ++i) {
    if ((static_cast<unsigned char>(text[i]) & 0xC0) != 0x80) starts.push_back(i);
  }
  starts.push_back(text.size());
  return starts;
}
}  // namespace

FimTokens find_fim_tokens(const Tokenizer& tokenizer) {
  std::vector<std::string> tried;
  for (const FimNames& names : kFimNames) {
    const auto prefix = tokenizer.token_id(names.prefix), suffix = tokenizer.token_id(names.suffix),
               middle = tokenizer.token_id(names.middle), pad = tokenizer.token_id(names.pad);
    if (prefix && suffix && middle && pad) return {*prefix, *suffix, *middle, *pad};
    tried.push_back(fmt::format("{} {} {} {}", names.prefix, names.suffix, names.middle, names.pad));
  }
  throw ConfigError(fmt::format("data.fim_rate > 0 needs the FIM special tokens in the tokenizer, but {} has neither "
                                "set ({}); add them as added_tokens (and raise model.vocab_size) or set data.fim_rate=0",
                                tokenizer.path(), fmt::join(tried, " / ")));
}

FimTransform::FimTransform(std::shared_ptr<const Tokenizer> tokenizer, double rate, double spm_rate, uint64_t seed)
    : tokenizer_(std::move(tokenizer)), tokens_(find_fim_tokens(*tokenizer_)), rate_(rate), spm_rate_(spm_rate), seed_(seed) {
  const auto eos = tokenizer_->eos_id();
  if (!eos) throw ConfigError(fmt::format("data.fim_rate > 0: {} has no end-of-document token to split samples at", tokenizer_->path()));
  eos_ = *eos;
}

std::vector<int32_t> FimTransform::permute(const std::vector<int32_t>& segment, uint64_t& state) const {
  const double apply = next_unit(state), cut_a = next_unit(state), cut_b = next_unit(state), spm = next_unit(state);
  if (segment.empty() || apply >= rate_) return segment;
  std::string text;
  try {
    text = tokenizer_->decode(segment);
  } catch (const TokenizerError&) {  // ids beyond this tokenizer (data tokenized with another): untouched
    return segment;
  }
  if (text.empty() || first_invalid_utf8(text) != std::string::npos) return segment;
  const std::vector<size_t> starts = character_starts(text);
  const size_t characters = starts.size() - 1;
  // Two cut points drawn uniformly over the character positions [0, characters], as Megatron.
  size_t a = std::min(characters, static_cast<size_t>(cut_a * static_cast<double>(characters + 1)));
  size_t b = std::min(characters, static_cast<size_t>(cut_b * static_cast<double>(characters + 1)));
  if (a > b) std::swap(a, b);
  const std::string_view all(text);
  const std::vector<int32_t> prefix = tokenizer_->encode(all.substr(0, starts[a]));
  const std::vector<int32_t> middle = tokenizer_->encode(all.substr(starts[a], starts[b] - starts[a]));
  const std::vector<int32_t> suffix = tokenizer_->encode(all.substr(starts[b]));
  std::vector<int32_t> out;
  out.reserve(prefix.size() + middle.size() + suffix.size() + 3);
  const auto append = [&](const std::vector<int32_t>& part) { out.insert(out.end(), part.begin(), part.end()); };
  if (spm < spm_rate_) {
    out.insert(out.end(), {tokens_.prefix, tokens_.suffix});
    append(suffix);
    out.push_back(tokens_.middle);
    append(prefix);
    append(middle);
  } else {
    out.push_back(tokens_.prefix);
    append(prefix);
    out.push_back(tokens_.suffix);
    append(suffix);
    out.push_back(tokens_.middle);
    append(middle);
  }
  return out;
}

std::vector<int32_t> FimTransform::apply(const std::vector<int32_t>& sample, int64_t global_index) const {
  if (rate_ <= 0) return sample;
  uint64_t state = mix64(seed_ ^ 0xF1F1F1F1ull, static_cast<uint64_t>(global_index));
  std::vector<int32_t> out;
  out.reserve(sample.size() + 8);
  size_t begin = 0;
  while (begin < sample.size()) {
    size_t end = begin;
    while (end < sample.size() && sample[end] != eos_) ++end;
    const std::vector<int32_t> permuted = permute({sample.begin() + static_cast<std::ptrdiff_t>(begin),
                                                   sample.begin() + static_cast<std::ptrdiff_t>(end)}, state);
    out.insert(out.end(), permuted.begin(), permuted.end());
    if (end < sample.size()) out.push_back(eos_);
    begin = end + 1;
  }
  out.resize(sample.size(), tokens_.pad);  // truncate, or pad (the pad is excluded from the loss)
  return out;
}

}  // namespace latentmoe::data
