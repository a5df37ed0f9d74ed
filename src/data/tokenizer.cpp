// HF tokenizer.json → byte-level BPE. Pipeline per text: split out added tokens; run the
// pre-tokenizers (each splits every current piece further); map bytes to the GPT-2 unicode
// alphabet; BPE-merge each piece (lowest merge rank first, leftmost on ties; cached per thread).
#define PCRE2_CODE_UNIT_WIDTH 8
#include "latentmoe/data/tokenizer.h"

#include "latentmoe/util/atomic_file.h"
#include "latentmoe/util/utf8.h"

#include <fmt/format.h>
#include <pcre2.h>

#include <algorithm>
#include <atomic>
#include <array>
#include <fstream>
#include <nlohmann/json.hpp>
#include <unordered_map>

namespace latentmoe::data {

using json = nlohmann::json;

namespace {

constexpr const char* kGpt2Pattern =
    R"('s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+)";

// GPT-2's reversible byte → printable code point table.
std::array<uint32_t, 256> byte_to_codepoint() {
  std::array<uint32_t, 256> table{};
  std::array<bool, 256> direct{};
  for (int b = '!'; b <= '~'; ++b) direct[b] = true;
  for (int b = 0xA1; b <= 0xAC; ++b) direct[b] = true;
  for (int b = 0xAE; b <= 0xFF; ++b) direct[b] = true;
  uint32_t next = 256;
  for (int b = 0; b < 256; ++b) table[b] = direct[b] ? static_cast<uint32_t>(b) : next++;
  return table;
}

void append_utf8(std::string& out, uint32_t cp) {
  if (cp < 0x80) {
    out += static_cast<char>(cp);
  } else if (cp < 0x800) {
    out += static_cast<char>(0xC0 | (cp >> 6));
    out += static_cast<char>(0x80 | (cp & 0x3F));
  } else {
    out += static_cast<char>(0xE0 | (cp >> 12));
    out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
    out += static_cast<char>(0x80 | (cp & 0x3F));
  }
}

// Regex owned by PCRE2 with JIT; matching is thread-safe with per-call match data.
class Regex {
 public:
  Regex(const std::string& pattern, const std::string& where) {
    int error = 0;
    PCRE2_SIZE offset = 0;
    code_ = pcre2_compile(reinterpret_cast<PCRE2_SPTR>(pattern.data()), pattern.size(), PCRE2_UTF | PCRE2_UCP, &error,
                          &offset, nullptr);
    if (code_ == nullptr) {
      PCRE2_UCHAR message[256];
      pcre2_get_error_message(error, message, sizeof(message));
      throw TokenizerError(fmt::format("{}: cannot compile regex at offset {}: {}", where, offset,
                                       reinterpret_cast<const char*>(message)));
    }
    pcre2_jit_compile(code_, PCRE2_JIT_COMPLETE);
  }
  ~Regex() { pcre2_code_free(code_); }
  Regex(const Regex&) = delete;
  Regex& operator=(const Regex&) = delete;

  // [begin, end) byte ranges of the successive non-overlapping matches in text.
  std::vector<std::pair<size_t, size_t>> find_all(std::string_view text) const {
    std::vector<std::pair<size_t, size_t>> out;
    pcre2_match_data* md = pcre2_match_data_create_from_pattern(code_, nullptr);
    size_t start = 0;
    while (start <= text.size()) {
      const int rc = pcre2_match(code_, reinterpret_cast<PCRE2_SPTR>(text.data()), text.size(), start,
                                 PCRE2_NO_UTF_CHECK, md, nullptr);
      if (rc == PCRE2_ERROR_NOMATCH) break;
      if (rc < 0) {
        pcre2_match_data_free(md);
        throw TokenizerError(fmt::format("regex match failed with PCRE2 error {}", rc));
      }
      const PCRE2_SIZE* ov = pcre2_get_ovector_pointer(md);
      if (ov[1] == ov[0]) {  // empty match: step one code point
        size_t next = ov[0] + 1;
        while (next < text.size() && (static_cast<unsigned char>(text[next]) & 0xC0) == 0x80) ++next;
        start = next;
        continue;
      }
      out.emplace_back(ov[0], ov[1]);
      start = ov[1];
    }
    pcre2_match_data_free(md);
    return out;
  }

 private:
  pcre2_code* code_ = nullptr;
};

struct SplitStep {
  std::unique_ptr<Regex> regex;
  bool remove_matches = false;  // behavior Removed; else Isolated
};

struct AddedToken {
  std::string content;
  int32_t id;
};


uint64_t pair_key(int32_t a, int32_t b) { return (static_cast<uint64_t>(static_cast<uint32_t>(a)) << 32) | static_cast<uint32_t>(b); }

}  // namespace

struct Tokenizer::Impl {
  inline static std::atomic<uint64_t> next_cache_id{1};
  const uint64_t cache_id = next_cache_id++;  // keys the per-thread encode cache
  std::string path;
  std::unordered_map<std::string, int32_t> vocab;
  std::vector<std::string> id_to_token;  // mapped-alphabet strings (or raw content for added tokens)
  std::vector<bool> is_added;
  std::unordered_map<uint64_t, std::pair<int32_t, int32_t>> merges;  // (a, b) → (rank, merged id)
  std::vector<AddedToken> added;  // longest first
  std::vector<SplitStep> splits;
  bool byte_level_regex = false;
  bool add_prefix_space = false;
  bool ignore_merges = false;
  std::array<int32_t, 256> byte_token{};  // id of each single mapped byte
  std::array<uint32_t, 256> byte_cp = byte_to_codepoint();
  std::unordered_map<uint32_t, uint8_t> cp_byte;

  [[noreturn]] void fail(const std::string& what) const { throw TokenizerError(fmt::format("{}: {}", path, what)); }

  void load_pre_tokenizer(const json& p, bool top_level) {
    if (p.is_null()) return;
    const std::string type = p.value("type", "");
    if (type == "Sequence") {
      for (const auto& step : p.at("pretokenizers")) load_pre_tokenizer(step, false);
    } else if (type == "ByteLevel") {
      byte_level_regex = p.value("use_regex", true);
      add_prefix_space = p.value("add_prefix_space", false);
    } else if (type == "Split") {
      const std::string behavior = p.value("behavior", "");
      if (behavior != "Isolated" && behavior != "Removed") {
        fail(fmt::format("unsupported Split pre-tokenizer behavior '{}' (supported: Isolated, Removed)", behavior));
      }
      if (p.value("invert", false)) fail("unsupported Split pre-tokenizer with invert=true");
      const json& pattern = p.at("pattern");
      std::string regex;
      if (pattern.contains("Regex")) {
        regex = pattern.at("Regex").get<std::string>();
      } else {
        const std::string literal = pattern.at("String").get<std::string>();
        for (char c : literal) {
          if (std::string_view("\\^$.|?*+()[]{}").find(c) != std::string_view::npos) regex += '\\';
          regex += c;
        }
      }
      splits.push_back({std::make_unique<Regex>(regex, path + " Split pattern"), behavior == "Removed"});
    } else {
      fail(fmt::format("unsupported pre_tokenizer component '{}'{} (supported: ByteLevel, Split, Sequence)", type,
                       top_level ? "" : " inside Sequence"));
    }
  }

  // Ids index id_to_token, so they must be exact integers in a sane range (nlohmann would turn
  // 3e21 into undefined behaviour and -1 into a write before the table).
  int32_t token_id_value(const json& value, const std::string& token) const {
    constexpr int64_t kMaxId = (1 << 24) - 1;
    if (!value.is_number_integer() || value.get<int64_t>() < 0 || value.get<int64_t>() > kMaxId ||
        (value.is_number_unsigned() && value.get<uint64_t>() > static_cast<uint64_t>(kMaxId))) {
      fail(fmt::format("token '{}' has id {}; ids must be integers in [0, {}]", token, value.dump(), kMaxId));
    }
    return static_cast<int32_t>(value.get<int64_t>());
  }

  void load(const json& j) {
    if (!j.contains("model") || j["model"].value("type", "") != "BPE") {
      fail(fmt::format("unsupported model type '{}' (supported: BPE)", j.contains("model") ? j["model"].value("type", "?") : "none"));
    }
    const json& model = j["model"];
    if (model.value("byte_fallback", false)) fail("unsupported BPE option byte_fallback=true");
    if (!model.value("continuing_subword_prefix", json()).is_null() || !model.value("end_of_word_suffix", json()).is_null()) {
      fail("unsupported BPE options continuing_subword_prefix/end_of_word_suffix");
    }
    if (!model.value("dropout", json()).is_null()) fail("unsupported BPE dropout (training-time noise)");
    ignore_merges = model.value("ignore_merges", false);
    if (j.contains("normalizer") && !j["normalizer"].is_null()) {
      fail(fmt::format("unsupported normalizer '{}' (supported: none)", j["normalizer"].value("type", "?")));
    }
    if (j.contains("decoder") && !j["decoder"].is_null() && j["decoder"].value("type", "") != "ByteLevel") {
      fail(fmt::format("unsupported decoder '{}' (supported: ByteLevel)", j["decoder"].value("type", "?")));
    }
    load_pre_tokenizer(j.value("pre_tokenizer", json()), true);

    int32_t max_id = -1;
    for (auto it = model.at("vocab").begin(); it != model.at("vocab").end(); ++it) {
      const int32_t id = token_id_value(it.value(), it.key());
      vocab.emplace(it.key(), id);
      max_id = std::max(max_id, id);
    }
    for (const auto& t : j.value("added_tokens", json::array())) {
      if (t.value("single_word", false) || t.value("lstrip", false) || t.value("rstrip", false)) {
        fail(fmt::format("unsupported added token options single_word/lstrip/rstrip on '{}'", t.value("content", "")));
      }
      const std::string content = t.at("content").get<std::string>();
      added.push_back({content, token_id_value(t.at("id"), content)});
      max_id = std::max(max_id, added.back().id);
    }
    std::sort(added.begin(), added.end(), [](const AddedToken& a, const AddedToken& b) { return a.content.size() > b.content.size(); });
    id_to_token.assign(static_cast<size_t>(max_id + 1), "");
    is_added.assign(static_cast<size_t>(max_id + 1), false);
    for (const auto& [token, id] : vocab) id_to_token[static_cast<size_t>(id)] = token;
    for (const auto& a : added) {
      id_to_token[static_cast<size_t>(a.id)] = a.content;
      is_added[static_cast<size_t>(a.id)] = true;
    }
    for (int b = 0; b < 256; ++b) {
      std::string s;
      append_utf8(s, byte_cp[b]);
      cp_byte[byte_cp[b]] = static_cast<uint8_t>(b);
      const auto it = vocab.find(s);
      byte_token[b] = it == vocab.end() ? -1 : it->second;
    }
    int32_t rank = 0;
    for (const auto& m : model.at("merges")) {
      std::string left, right;
      if (m.is_string()) {
        const std::string s = m.get<std::string>();
        const size_t space = s.find(' ', 1);
        if (space == std::string::npos) fail(fmt::format("merge #{} '{}' is not 'left right'", rank, s));
        left = s.substr(0, space);
        right = s.substr(space + 1);
      } else {
        left = m.at(0).get<std::string>();
        right = m.at(1).get<std::string>();
      }
      const auto l = vocab.find(left), r = vocab.find(right), merged = vocab.find(left + right);
      if (l == vocab.end() || r == vocab.end() || merged == vocab.end()) {
        fail(fmt::format("merge #{} '{} {}' uses a token missing from the vocabulary", rank, left, right));
      }
      merges.emplace(pair_key(l->second, r->second), std::make_pair(rank, merged->second));
      ++rank;
    }
  }

  // BPE over one pre-token given as raw bytes.
  void bpe(std::string_view piece, std::vector<int32_t>& out) const {
    std::string mapped;
    for (unsigned char c : piece) append_utf8(mapped, byte_cp[c]);
    if (ignore_merges) {
      if (const auto it = vocab.find(mapped); it != vocab.end()) {
        out.push_back(it->second);
        return;
      }
    }
    std::vector<int32_t> symbols;
    symbols.reserve(piece.size());
    for (unsigned char c : piece) {
      if (byte_token[c] < 0) fail(fmt::format("byte 0x{:02x} has no token: not a byte-level vocabulary", c));
      symbols.push_back(byte_token[c]);
    }
    while (symbols.size() > 1) {
      int32_t best_rank = INT32_MAX, best_id = -1;
      size_t best_pos = 0;
      for (size_t i = 0; i + 1 < symbols.size(); ++i) {
        const auto it = merges.find(pair_key(symbols[i], symbols[i + 1]));
        if (it != merges.end() && it->second.first < best_rank) {
          best_rank = it->second.first;
          best_id = it->second.second;
          best_pos = i;
        }
      }
      if (best_id < 0) break;
      symbols[best_pos] = best_id;
      symbols.erase(symbols.begin() + static_cast<std::ptrdiff_t>(best_pos) + 1);
    }
    out.insert(out.end(), symbols.begin(), symbols.end());
  }

  void encode_piece(std::string_view piece, std::vector<int32_t>& out) const {
    // Keyed by a process-unique id, not the address: a tokenizer allocated where a destroyed one
    // was must not inherit its entries.
    thread_local uint64_t owner = 0;
    thread_local std::unordered_map<std::string, std::vector<int32_t>> cache;
    if (owner != cache_id || cache.size() > (1u << 20)) {
      cache.clear();
      owner = cache_id;
    }
    const auto it = cache.find(std::string(piece));
    if (it != cache.end()) {
      out.insert(out.end(), it->second.begin(), it->second.end());
      return;
    }
    std::vector<int32_t> ids;
    bpe(piece, ids);
    out.insert(out.end(), ids.begin(), ids.end());
    cache.emplace(std::string(piece), std::move(ids));
  }

  // Pre-tokenizes a segment without added tokens into byte ranges, then BPE.
  void encode_segment(std::string_view text, std::vector<int32_t>& out) const {
    std::string prefixed;
    if (add_prefix_space && !text.empty() && text.front() != ' ') {
      prefixed = " " + std::string(text);
      text = prefixed;
    }
    std::vector<std::pair<size_t, size_t>> pieces{{0, text.size()}};
    const auto refine = [&](const Regex& regex, bool remove) {
      std::vector<std::pair<size_t, size_t>> next;
      for (const auto& [b, e] : pieces) {
        size_t cursor = b;
        for (const auto& [mb, me] : regex.find_all(text.substr(b, e - b))) {
          if (b + mb > cursor) next.emplace_back(cursor, b + mb);
          if (!remove) next.emplace_back(b + mb, b + me);
          cursor = b + me;
        }
        if (cursor < e) next.emplace_back(cursor, e);
      }
      pieces = std::move(next);
    };
    for (const auto& s : splits) refine(*s.regex, s.remove_matches);
    if (byte_level_regex) {
      static const Regex gpt2(kGpt2Pattern, "GPT-2 ByteLevel pattern");
      refine(gpt2, false);
    }
    for (const auto& [b, e] : pieces) encode_piece(text.substr(b, e - b), out);
  }
};

Tokenizer::Tokenizer(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
Tokenizer::~Tokenizer() = default;
Tokenizer::Tokenizer(Tokenizer&&) noexcept = default;
Tokenizer& Tokenizer::operator=(Tokenizer&&) noexcept = default;

Tokenizer Tokenizer::from_file(const std::string& path) {
  const std::optional<std::string> text = read_text_file(path);
  if (!text) throw TokenizerError(fmt::format("{}: cannot open tokenizer file", path));
  return from_json_text(*text, path);
}

Tokenizer Tokenizer::from_json_text(std::string_view text, const std::string& source) {
  auto impl = std::make_unique<Impl>();
  impl->path = source;
  try {
    impl->load(json::parse(text.begin(), text.end()));
  } catch (const json::exception& e) {
    throw TokenizerError(fmt::format("{}: malformed tokenizer.json: {}", source, e.what()));
  }
  return Tokenizer(std::move(impl));
}

std::vector<int32_t> Tokenizer::encode(std::string_view text) const {
  if (const size_t bad = first_invalid_utf8(text); bad != std::string_view::npos) {
    throw TokenizerError(fmt::format("input is not valid UTF-8 (bad byte 0x{:02x} at offset {})",
                                     static_cast<unsigned char>(text[bad]), bad));
  }
  std::vector<int32_t> out;
  out.reserve(text.size() / 3);
  size_t segment_start = 0, pos = 0;
  const auto& added = impl_->added;
  while (pos < text.size()) {
    const AddedToken* hit = nullptr;
    for (const auto& a : added) {
      if (!a.content.empty() && text.compare(pos, a.content.size(), a.content) == 0) {
        hit = &a;
        break;  // longest first
      }
    }
    if (hit == nullptr) {
      ++pos;
      continue;
    }
    if (pos > segment_start) impl_->encode_segment(text.substr(segment_start, pos - segment_start), out);
    out.push_back(hit->id);
    pos += hit->content.size();
    segment_start = pos;
  }
  if (segment_start < text.size()) impl_->encode_segment(text.substr(segment_start), out);
  return out;
}

std::string Tokenizer::decode(const std::vector<int32_t>& ids) const {
  std::string out;
  for (int32_t id : ids) {
    if (id < 0 || static_cast<size_t>(id) >= impl_->id_to_token.size()) {
      throw TokenizerError(fmt::format("{}: cannot decode id {} (vocabulary size {})", impl_->path, id, impl_->id_to_token.size()));
    }
    const std::string& token = impl_->id_to_token[static_cast<size_t>(id)];
    if (impl_->is_added[static_cast<size_t>(id)]) {
      out += token;
      continue;
    }
    // UTF-8 code points of the mapped alphabet → original bytes.
    for (size_t i = 0; i < token.size();) {
      const auto c = static_cast<unsigned char>(token[i]);
      // The token is valid UTF-8 (the JSON parser checked), but never read past its end.
      size_t len = c < 0x80 ? 1 : (c & 0xE0) == 0xC0 ? 2 : (c & 0xF0) == 0xE0 ? 3 : (c & 0xF8) == 0xF0 ? 4 : 1;
      len = std::min(len, token.size() - i);
      uint32_t cp = len == 1 ? c : c & (0x7Fu >> len);
      for (size_t k = 1; k < len; ++k) cp = (cp << 6) | (static_cast<unsigned char>(token[i + k]) & 0x3F);
      const auto it = impl_->cp_byte.find(cp);
      if (it != impl_->cp_byte.end()) out += static_cast<char>(it->second);
      i += len;
    }
  }
  return out;
}

int64_t Tokenizer::vocab_size() const { return static_cast<int64_t>(impl_->id_to_token.size()); }

std::optional<int32_t> Tokenizer::token_id(const std::string& token) const {
  for (const auto& a : impl_->added) {
    if (a.content == token) return a.id;
  }
  const auto it = impl_->vocab.find(token);
  return it == impl_->vocab.end() ? std::nullopt : std::optional<int32_t>(it->second);
}

std::optional<int32_t> Tokenizer::eos_id() const {
  for (const char* name : {"<|end_of_text|>", "<|endoftext|>", "</s>", "<｜end▁of▁sentence｜>", "<eos>"}) {
    if (auto id = token_id(name)) return id;
  }
  return std::nullopt;
}

const std::string& Tokenizer::path() const { return impl_->path; }

}  // namespace latentmoe::data
