// Byte-level BPE tokenizer loaded from a Hugging Face `tokenizer.json` (GPT-2, Llama-3 and
// DeepSeek-V3 style): added/special tokens, regex Split pre-tokenizers (PCRE2, \p{L}/\p{N}),
// ByteLevel pre-tokenizer and decoder, BPE merges. Encodes exactly like HF `tokenizers` with
// add_special_tokens=False. Unsupported components are rejected by name. No torch headers.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

namespace latentmoe::data {

// tokenizer.json problems (unsupported component, malformed file) and un-encodable input.
class TokenizerError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

class Tokenizer {
 public:
  static Tokenizer from_file(const std::string& path);
  // The same from the file's text; `source` names it in errors.
  static Tokenizer from_json_text(std::string_view text, const std::string& source);
  ~Tokenizer();
  Tokenizer(Tokenizer&&) noexcept;
  Tokenizer& operator=(Tokenizer&&) noexcept;

  // Text must be valid UTF-8 (TokenizerError otherwise). Special tokens inside the text are
  // recognized as their ids.
  std::vector<int32_t> encode(std::string_view text) const;
  std::string decode(const std::vector<int32_t>& ids) const;

  int64_t vocab_size() const;  // highest id + 1, added tokens included
  std::optional<int32_t> token_id(const std::string& token) const;
  // The end-of-document token: the first of <|end_of_text|>, <|endoftext|>, </s>,
  // <｜end▁of▁sentence｜>, <eos> present in the vocabulary.
  std::optional<int32_t> eos_id() const;
  const std::string& path() const;

 private:
  struct Impl;
  explicit Tokenizer(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace latentmoe::data
