// Megatron-Core IndexedDataset (.bin + .idx), bit-compatible both ways. The .idx holds:
// magic "MMIDIDX\0\0", u64 version 1, u8 dtype code, u64 sequence count S, u64 document-index
// count D (= documents + 1), i32 lengths[S], i64 byte pointers[S], i64 document indices[D].
// Reading validates every size against the files. No torch headers.
#pragma once

#include <cstdint>
#include <memory>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

namespace latentmoe::data {

// Corrupt, truncated or inconsistent data files; what() names the file, expected and actual.
class DataError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// Megatron's dtype codes.
enum class TokenDtype : uint8_t { u8 = 1, i8 = 2, i16 = 3, i32 = 4, i64 = 5, f64 = 6, f32 = 7, u16 = 8 };
size_t token_dtype_size(TokenDtype dtype);
// Megatron's rule: uint16 when the vocabulary has fewer than 65500 ids, else int32.
TokenDtype token_dtype_for_vocab(int64_t vocab_size);

// The contents of a .idx file, checked for internal consistency (magic, version, dtype, sizes,
// pointers contiguous from 0, document indices from 0 to the sequence count, no overflow) but not
// yet against the .bin. Throws DataError naming idx_path.
struct IndexedDatasetIndex {
  TokenDtype dtype = TokenDtype::u16;
  std::vector<int32_t> lengths;
  std::vector<int64_t> pointers;
  std::vector<int64_t> document_indices;
  int64_t total_tokens = 0;
  int64_t bin_bytes = 0;  // the exact size the .bin must have
};
IndexedDatasetIndex parse_indexed_dataset_index(std::string_view idx, const std::string& idx_path);

class IndexedDatasetWriter {
 public:
  IndexedDatasetWriter(std::string prefix, TokenDtype dtype);
  ~IndexedDatasetWriter();
  // One document = one sequence (as Megatron's preprocess_data without sentence splitting).
  void add_document(const std::vector<int32_t>& tokens);
  // Writes the .idx and moves both files into place; without it nothing appears at `prefix`.
  void finalize();
  int64_t documents() const { return static_cast<int64_t>(lengths_.size()); }
  int64_t tokens() const { return tokens_; }

 private:
  std::string prefix_;
  TokenDtype dtype_;
  std::unique_ptr<std::FILE, int (*)(std::FILE*)> bin_;
  std::vector<int32_t> lengths_;
  int64_t tokens_ = 0;
  bool finalized_ = false;
};

class IndexedDataset {
 public:
  explicit IndexedDataset(const std::string& prefix);
  ~IndexedDataset();
  IndexedDataset(IndexedDataset&&) noexcept;

  const std::string& prefix() const { return prefix_; }
  TokenDtype dtype() const { return dtype_; }
  int64_t num_sequences() const { return static_cast<int64_t>(lengths_.size()); }
  int64_t num_documents() const { return static_cast<int64_t>(document_indices_.size()) - 1; }
  int64_t sequence_length(int64_t i) const { return lengths_[static_cast<size_t>(i)]; }
  int64_t total_tokens() const { return total_tokens_; }
  const std::vector<int64_t>& document_indices() const { return document_indices_; }
  // Appends tokens [offset, offset + count) of sequence i to out.
  void read(int64_t sequence, int64_t offset, int64_t count, std::vector<int32_t>& out) const;
  // Largest token id (scans the .bin once).
  int64_t max_token() const;

 private:
  struct Mapping;
  std::string prefix_;
  TokenDtype dtype_ = TokenDtype::u16;
  std::vector<int32_t> lengths_;
  std::vector<int64_t> pointers_;
  std::vector<int64_t> document_indices_;
  int64_t total_tokens_ = 0;
  std::unique_ptr<Mapping> bin_;
};

}  // namespace latentmoe::data
