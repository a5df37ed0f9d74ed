// Megatron IndexedDataset reader/writer. The writer streams the .bin to a temporary name and
// renames both files only in finalize(), so an interrupted prepare-data leaves nothing half-made.
#include "latentmoe/data/indexed_dataset.h"

#include <fcntl.h>
#include <fmt/format.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <limits>

#include "latentmoe/util/atomic_file.h"

namespace latentmoe::data {

namespace fs = std::filesystem;

namespace {
constexpr char kMagic[9] = {'M', 'M', 'I', 'D', 'I', 'D', 'X', '\0', '\0'};

template <class T>
void put(std::string& out, T value) {
  out.append(reinterpret_cast<const char*>(&value), sizeof(T));
}

}  // namespace

size_t token_dtype_size(TokenDtype dtype) {
  switch (dtype) {
    case TokenDtype::u8: case TokenDtype::i8: return 1;
    case TokenDtype::i16: case TokenDtype::u16: return 2;
    case TokenDtype::i32: case TokenDtype::f32: return 4;
    case TokenDtype::i64: case TokenDtype::f64: return 8;
  }
  return 0;
}

TokenDtype token_dtype_for_vocab(int64_t vocab_size) { return vocab_size < 65500 ? TokenDtype::u16 : TokenDtype::i32; }

IndexedDatasetWriter::IndexedDatasetWriter(std::string prefix, TokenDtype dtype)
    : prefix_(std::move(prefix)), dtype_(dtype), bin_(nullptr, &std::fclose) {
  if (dtype != TokenDtype::u16 && dtype != TokenDtype::i32 && dtype != TokenDtype::i64) {
    throw DataError(fmt::format("{}: token dtype code {} is not supported for writing (uint16, int32, int64)", prefix_,
                                static_cast<int>(dtype)));
  }
  const fs::path parent = fs::path(prefix_).parent_path();
  if (!parent.empty()) fs::create_directories(parent);
  bin_.reset(std::fopen((prefix_ + ".bin.tmp").c_str(), "wb"));
  if (!bin_) throw DataError(fmt::format("{}.bin.tmp: cannot open for writing: {}", prefix_, std::strerror(errno)));
}

IndexedDatasetWriter::~IndexedDatasetWriter() {
  if (!finalized_) {
    bin_.reset();
    std::error_code ec;
    fs::remove(prefix_ + ".bin.tmp", ec);
  }
}

void IndexedDatasetWriter::add_document(const std::vector<int32_t>& tokens) {
  std::string bytes;
  bytes.reserve(tokens.size() * token_dtype_size(dtype_));
  for (int32_t t : tokens) {
    if (t < 0 || (dtype_ == TokenDtype::u16 && t > 65535)) {
      throw DataError(fmt::format("{}: token id {} does not fit the dataset dtype", prefix_, t));
    }
    if (dtype_ == TokenDtype::u16) put(bytes, static_cast<uint16_t>(t));
    else if (dtype_ == TokenDtype::i32) put(bytes, t);
    else put(bytes, static_cast<int64_t>(t));
  }
  if (std::fwrite(bytes.data(), 1, bytes.size(), bin_.get()) != bytes.size()) {
    throw DataError(fmt::format("{}.bin.tmp: write failed (disk full?)", prefix_));
  }
  lengths_.push_back(static_cast<int32_t>(tokens.size()));
  tokens_ += static_cast<int64_t>(tokens.size());
}

void IndexedDatasetWriter::finalize() {
  if (std::fflush(bin_.get()) != 0) throw DataError(fmt::format("{}.bin.tmp: flush failed", prefix_));
  ::fsync(fileno(bin_.get()));
  bin_.reset();
  std::string idx(kMagic, sizeof(kMagic));
  put<uint64_t>(idx, 1);
  put<uint8_t>(idx, static_cast<uint8_t>(dtype_));
  put<uint64_t>(idx, lengths_.size());
  put<uint64_t>(idx, lengths_.size() + 1);
  for (int32_t len : lengths_) put(idx, len);
  int64_t pointer = 0;
  for (int32_t len : lengths_) {
    put(idx, pointer);
    pointer += static_cast<int64_t>(len) * static_cast<int64_t>(token_dtype_size(dtype_));
  }
  for (size_t d = 0; d <= lengths_.size(); ++d) put(idx, static_cast<int64_t>(d));
  {
    std::ofstream out(prefix_ + ".idx.tmp", std::ios::binary | std::ios::trunc);
    out.write(idx.data(), static_cast<std::streamsize>(idx.size()));
    if (!out) throw DataError(fmt::format("{}.idx.tmp: write failed", prefix_));
  }
  fs::rename(prefix_ + ".bin.tmp", prefix_ + ".bin");
  fs::rename(prefix_ + ".idx.tmp", prefix_ + ".idx");
  finalized_ = true;
}

struct IndexedDataset::Mapping {
  void* address = MAP_FAILED;
  size_t size = 0;
  ~Mapping() {
    if (address != MAP_FAILED && size > 0) munmap(address, size);
  }
};

IndexedDataset::~IndexedDataset() = default;
IndexedDataset::IndexedDataset(IndexedDataset&&) noexcept = default;

IndexedDatasetIndex parse_indexed_dataset_index(std::string_view idx, const std::string& idx_path) {
  const auto need = [&](size_t bytes, const char* what) {
    if (idx.size() < bytes) {
      throw DataError(fmt::format("{}: truncated: {} bytes, need at least {} for {}", idx_path, idx.size(), bytes, what));
    }
  };
  need(9 + 8 + 1 + 8 + 8, "the header");
  if (std::memcmp(idx.data(), kMagic, sizeof(kMagic)) != 0) {
    throw DataError(fmt::format("{}: wrong magic (expected Megatron's \"MMIDIDX\\0\\0\"): not an IndexedDataset index", idx_path));
  }
  size_t at = 9;
  const auto get = [&](auto& value) {
    std::memcpy(&value, idx.data() + at, sizeof(value));
    at += sizeof(value);
  };
  IndexedDatasetIndex out;
  uint64_t version = 0, sequences = 0, documents = 0;
  uint8_t code = 0;
  get(version);
  if (version != 1) throw DataError(fmt::format("{}: version {} is not supported (expected 1)", idx_path, version));
  get(code);
  if (code < 1 || code > 8) throw DataError(fmt::format("{}: unknown dtype code {} (Megatron codes are 1..8)", idx_path, code));
  out.dtype = static_cast<TokenDtype>(code);
  if (out.dtype == TokenDtype::f32 || out.dtype == TokenDtype::f64) {
    throw DataError(fmt::format("{}: dtype code {} is a float type: not token ids", idx_path, code));
  }
  get(sequences);
  get(documents);
  // Bounded first so that the byte count cannot overflow.
  const bool bounded = sequences <= (1ull << 40) && documents <= (1ull << 40);
  const uint64_t expected = bounded ? 9 + 8 + 1 + 8 + 8 + sequences * (4 + 8) + documents * 8 : 0;
  if (!bounded || idx.size() < expected) {
    throw DataError(fmt::format("{}: {} sequences and {} document indices need {} bytes, the file has {}", idx_path,
                                sequences, documents, bounded ? fmt::to_string(expected) : "more than 2^40", idx.size()));
  }
  // memcpy from or to a null pointer is undefined even for 0 bytes (empty vectors have none).
  const auto copy = [&](auto& values) {
    const size_t bytes = values.size() * sizeof(values[0]);
    if (bytes > 0) std::memcpy(values.data(), idx.data() + at, bytes);
    at += bytes;
  };
  out.lengths.resize(sequences);
  out.pointers.resize(sequences);
  out.document_indices.resize(documents);
  copy(out.lengths);
  copy(out.pointers);
  copy(out.document_indices);
  const auto& docs = out.document_indices;
  if (documents < 1 || docs.front() != 0 || docs.back() != static_cast<int64_t>(sequences)) {
    throw DataError(fmt::format("{}: document indices must run from 0 to the sequence count {}", idx_path, sequences));
  }
  for (size_t d = 1; d < documents; ++d) {
    if (docs[d] < docs[d - 1]) throw DataError(fmt::format("{}: document indices decrease at {}", idx_path, d));
  }
  const int64_t item = static_cast<int64_t>(token_dtype_size(out.dtype));
  int64_t pointer = 0;
  for (size_t i = 0; i < sequences; ++i) {
    const int32_t length = out.lengths[i];
    if (length < 0 || out.pointers[i] != pointer) {
      throw DataError(fmt::format("{}: sequence {} has length {} at byte {}, expected a non-negative length at byte {}",
                                  idx_path, i, length, out.pointers[i], pointer));
    }
    if (static_cast<int64_t>(length) * item > std::numeric_limits<int64_t>::max() - pointer) {
      throw DataError(fmt::format("{}: sequence {} ends past 2^63 bytes: corrupt lengths", idx_path, i));
    }
    pointer += static_cast<int64_t>(length) * item;
    out.total_tokens += length;
  }
  out.bin_bytes = pointer;
  return out;
}

IndexedDataset::IndexedDataset(const std::string& prefix) : prefix_(prefix), bin_(std::make_unique<Mapping>()) {
  const std::string idx_path = prefix + ".idx", bin_path = prefix + ".bin";
  const std::optional<std::string> idx = read_text_file(idx_path);
  if (!idx) throw DataError(fmt::format("{}: cannot open", idx_path));
  IndexedDatasetIndex index = parse_indexed_dataset_index(*idx, idx_path);
  dtype_ = index.dtype;
  lengths_ = std::move(index.lengths);
  pointers_ = std::move(index.pointers);
  document_indices_ = std::move(index.document_indices);
  total_tokens_ = index.total_tokens;
  const int64_t pointer = index.bin_bytes;
  const int64_t item = static_cast<int64_t>(token_dtype_size(dtype_));
  const int fd = ::open(bin_path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) throw DataError(fmt::format("{}: cannot open: {}", bin_path, std::strerror(errno)));
  struct stat st {};
  fstat(fd, &st);
  if (static_cast<int64_t>(st.st_size) != pointer) {
    ::close(fd);
    throw DataError(fmt::format("{}: {} bytes, but {} describes {} tokens x {} bytes = {} bytes (truncated or mismatched)",
                                bin_path, st.st_size, idx_path, total_tokens_, item, pointer));
  }
  if (pointer > 0) {
    bin_->size = static_cast<size_t>(pointer);
    bin_->address = mmap(nullptr, bin_->size, PROT_READ, MAP_SHARED, fd, 0);
  }
  ::close(fd);
  if (pointer > 0 && bin_->address == MAP_FAILED) throw DataError(fmt::format("{}: mmap failed", bin_path));
}

void IndexedDataset::read(int64_t sequence, int64_t offset, int64_t count, std::vector<int32_t>& out) const {
  if (sequence < 0 || sequence >= num_sequences() || offset < 0 || count < 0 || offset + count > lengths_[sequence]) {
    throw DataError(fmt::format("{}: read of sequence {} [{}, {}) is out of range", prefix_, sequence, offset, offset + count));
  }
  const auto* base = static_cast<const uint8_t*>(bin_->address) + pointers_[sequence];
  const size_t item = token_dtype_size(dtype_);
  for (int64_t k = 0; k < count; ++k) {
    const uint8_t* p = base + (offset + k) * static_cast<int64_t>(item);
    int64_t v = 0;
    switch (dtype_) {
      case TokenDtype::u8: v = *p; break;
      case TokenDtype::i8: v = static_cast<int8_t>(*p); break;
      case TokenDtype::u16: { uint16_t x; std::memcpy(&x, p, 2); v = x; break; }
      case TokenDtype::i16: { int16_t x; std::memcpy(&x, p, 2); v = x; break; }
      case TokenDtype::i32: { int32_t x; std::memcpy(&x, p, 4); v = x; break; }
      default: { int64_t x; std::memcpy(&x, p, 8); v = x; break; }
    }
    out.push_back(static_cast<int32_t>(v));
  }
}

int64_t IndexedDataset::max_token() const {
  int64_t best = -1;
  std::vector<int32_t> buffer;
  for (int64_t s = 0; s < num_sequences(); ++s) {
    buffer.clear();
    read(s, 0, lengths_[s], buffer);
    for (int32_t t : buffer) best = std::max<int64_t>(best, t);
  }
  return best;
}

}  // namespace latentmoe::data
