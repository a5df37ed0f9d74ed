// Deterministic, resumable sample order over packed documents. Documents (each ending in EOS) are
// concatenated per split; sample k is the seq_len + 1 tokens starting at k * seq_len (no
// cross-document mask, as DeepSeek-V3). The order of samples is a keyed bijection of
// (seed, epoch, index) — no RNG state — and sample indices are global: data-parallel rank r of W
// takes its contiguous slice of every global batch, so the state is just `consumed_samples` and
// a resume with another DP degree neither repeats nor skips. Several datasets blend with
// Megatron's weighted greedy rule. No torch headers.
#pragma once

#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "latentmoe/data/fim.h"
#include "latentmoe/data/indexed_dataset.h"

namespace latentmoe::data {

enum class Split { train, valid };

// Keyed permutation of [0, n): a 4-round Feistel network on the next power of 4, cycle-walking.
class IndexPermutation {
 public:
  IndexPermutation(uint64_t n, uint64_t key);
  uint64_t operator()(uint64_t index) const;
  uint64_t size() const { return n_; }

 private:
  uint64_t n_, half_bits_, half_mask_, keys_[4];
};

// Whether document `doc` of a dataset belongs to the validation split.
bool is_validation_document(int64_t doc, double valid_fraction);

struct LoaderOptions {
  int64_t seq_len = 128;
  uint64_t seed = 1234;
  double valid_fraction = 0.02;
  Split split = Split::train;
  std::vector<double> weights;  // one per dataset; empty = proportional to tokens
  int64_t vocab_size = 0;       // > 0: every token id is checked against it at open
  std::shared_ptr<const FimTransform> fim;  // set: every sample goes through fill-in-the-middle
};

// One dataset's split as a packed token stream.
class PackedDataset {
 public:
  PackedDataset(std::shared_ptr<const IndexedDataset> dataset, const LoaderOptions& options);
  int64_t num_samples() const { return num_samples_; }
  int64_t num_tokens() const { return stream_tokens_; }
  // Tokens [k * seq_len, k * seq_len + seq_len + 1) of the split's stream.
  std::vector<int32_t> sample(int64_t k) const;
  const std::string& prefix() const;

 private:
  std::shared_ptr<const IndexedDataset> dataset_;
  int64_t seq_len_;
  std::vector<int64_t> sequences_;   // sequence ids of the split, in order
  std::vector<int64_t> starts_;      // stream offset of each (prefix sums), plus the total
  int64_t stream_tokens_ = 0, num_samples_ = 0;
};

struct Batch {
  int64_t size = 0, width = 0;  // width = seq_len + 1
  std::vector<int32_t> tokens;  // row-major [size, width]
  std::vector<int64_t> sample_indices;  // global indices, for tests and logs
};

class DataLoader {
 public:
  DataLoader(const std::vector<std::string>& prefixes, const LoaderOptions& options);

  // Global sample n → tokens. Epoch e = n / samples_per_epoch is reshuffled with key (seed, e).
  std::vector<int32_t> sample(int64_t global_index) const;
  // The rows of global batch `step` that data-parallel rank `rank` of `world` owns:
  // [step*B + rank*B/W, step*B + (rank+1)*B/W). B must be divisible by W.
  Batch rank_batch(int64_t first_sample, int64_t global_batch, int64_t rank, int64_t world) const;
  Batch batch(const std::vector<int64_t>& global_indices) const;
  // Where global sample n comes from: "<dataset prefix> sample k (tokens [a, b) of its split)".
  std::string describe_sample(int64_t global_index) const;
  int64_t samples_per_epoch() const { return samples_per_epoch_; }
  int64_t seq_len() const { return options_.seq_len; }

 private:
  // Dataset and its local sample index for global sample position p within an epoch.
  std::pair<size_t, int64_t> blend(int64_t position) const;
  // Dataset and its split-stream sample index for global sample n (epoch shuffle, blend, wrap).
  std::pair<size_t, int64_t> origin(int64_t global_index) const;

  LoaderOptions options_;
  std::vector<PackedDataset> datasets_;
  std::vector<double> weights_;
  int64_t samples_per_epoch_ = 0;
  mutable std::mutex blend_mutex_;
  mutable std::vector<uint32_t> blend_dataset_;  // grown lazily: Megatron's greedy assignment
  mutable std::vector<int64_t> blend_local_;
  mutable std::vector<int64_t> blend_counts_;
};

}  // namespace latentmoe::data
