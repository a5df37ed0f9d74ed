// Packing, the keyed permutation, blending and data-parallel slicing.
#include "latentmoe/data/loader.h"

#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <mutex>

#include "latentmoe/util/hash.h"

namespace latentmoe::data {


IndexPermutation::IndexPermutation(uint64_t n, uint64_t key) : n_(n) {
  uint64_t bits = 2;
  while ((1ull << bits) < n) bits += 2;
  half_bits_ = bits / 2;
  half_mask_ = (1ull << half_bits_) - 1;
  for (int r = 0; r < 4; ++r) keys_[r] = splitmix64(key + 0x1234567ull * static_cast<uint64_t>(r + 1));
}

uint64_t IndexPermutation::operator()(uint64_t index) const {
  uint64_t x = index;
  do {  // cycle-walk until the value lands inside [0, n)
    uint64_t left = x >> half_bits_, right = x & half_mask_;
    for (const uint64_t k : keys_) {
      const uint64_t next = left ^ (splitmix64(right ^ k) & half_mask_);
      left = right;
      right = next;
    }
    x = (left << half_bits_) | right;
  } while (x >= n_);
  return x;
}

bool is_validation_document(int64_t doc, double valid_fraction) {
  const double u = static_cast<double>(splitmix64(static_cast<uint64_t>(doc) ^ 0xDA7A5EEDull) >> 11) * 0x1.0p-53;
  return u < valid_fraction;
}

PackedDataset::PackedDataset(std::shared_ptr<const IndexedDataset> dataset, const LoaderOptions& options)
    : dataset_(std::move(dataset)), seq_len_(options.seq_len) {
  const auto& docs = dataset_->document_indices();
  for (int64_t d = 0; d + 1 < static_cast<int64_t>(docs.size()); ++d) {
    if (is_validation_document(d, options.valid_fraction) != (options.split == Split::valid)) continue;
    for (int64_t s = docs[d]; s < docs[d + 1]; ++s) {
      if (dataset_->sequence_length(s) == 0) continue;
      sequences_.push_back(s);
      starts_.push_back(stream_tokens_);
      stream_tokens_ += dataset_->sequence_length(s);
    }
  }
  starts_.push_back(stream_tokens_);
  num_samples_ = stream_tokens_ > 0 ? (stream_tokens_ - 1) / seq_len_ : 0;
  if (num_samples_ == 0) {
    throw DataError(fmt::format("{}: the {} split has {} tokens in {} documents, fewer than one sample of "
                                "train.seq_len + 1 = {} tokens (lower train.seq_len or data.valid_fraction, or add data)",
                                dataset_->prefix(), options.split == Split::train ? "train" : "validation", stream_tokens_,
                                sequences_.size(), seq_len_ + 1));
  }
}

const std::string& PackedDataset::prefix() const { return dataset_->prefix(); }

std::vector<int32_t> PackedDataset::sample(int64_t k) const {
  std::vector<int32_t> out;
  out.reserve(static_cast<size_t>(seq_len_ + 1));
  int64_t position = k * seq_len_, remaining = seq_len_ + 1;
  // First sequence containing `position`.
  size_t s = static_cast<size_t>(std::upper_bound(starts_.begin(), starts_.end(), position) - starts_.begin()) - 1;
  while (remaining > 0) {
    const int64_t offset = position - starts_[s];
    const int64_t take = std::min(remaining, dataset_->sequence_length(sequences_[s]) - offset);
    dataset_->read(sequences_[s], offset, take, out);
    remaining -= take;
    position += take;
    ++s;
  }
  return out;
}

DataLoader::DataLoader(const std::vector<std::string>& prefixes, const LoaderOptions& options) : options_(options) {
  if (prefixes.empty()) throw DataError("data.paths is empty: give at least one dataset prefix");
  if (options.seq_len <= 0) throw DataError(fmt::format("train.seq_len must be > 0, got {}", options.seq_len));
  if (!options.weights.empty() && options.weights.size() != prefixes.size()) {
    throw DataError(fmt::format("data.weights has {} entries for {} data.paths", options.weights.size(), prefixes.size()));
  }
  for (const auto& prefix : prefixes) {
    auto dataset = std::make_shared<const IndexedDataset>(prefix);
    if (options.vocab_size > 0) {
      const int64_t max_id = dataset->max_token();
      if (max_id >= options.vocab_size) {
        throw DataError(fmt::format("{}.bin: token id {} >= model.vocab_size {} (tokenized with another tokenizer?)",
                                    prefix, max_id, options.vocab_size));
      }
    }
    datasets_.emplace_back(std::move(dataset), options);
  }
  double total_weight = 0;
  for (size_t i = 0; i < datasets_.size(); ++i) {
    const double w = options.weights.empty() ? static_cast<double>(datasets_[i].num_tokens()) : options.weights[i];
    if (!(w >= 0)) throw DataError(fmt::format("data.weights[{}] must be >= 0, got {}", i, w));
    weights_.push_back(w);
    total_weight += w;
  }
  if (total_weight <= 0) throw DataError("data.weights must not all be 0");
  for (auto& w : weights_) w /= total_weight;
  for (const auto& d : datasets_) samples_per_epoch_ += d.num_samples();
  blend_counts_.assign(datasets_.size(), 0);
}

std::pair<size_t, int64_t> DataLoader::blend(int64_t position) const {
  if (datasets_.size() == 1) return {0, position};
  std::lock_guard lock(blend_mutex_);  // background batch workers share the lazily grown table
  while (static_cast<int64_t>(blend_dataset_.size()) <= position) {
    // Megatron's BlendedDataset: pick the dataset furthest behind its weighted share.
    const double n = static_cast<double>(blend_dataset_.size() + 1);
    size_t best = 0;
    double best_error = -1e300;
    for (size_t i = 0; i < datasets_.size(); ++i) {
      const double error = weights_[i] * n - static_cast<double>(blend_counts_[i]);
      if (error > best_error) {
        best_error = error;
        best = i;
      }
    }
    blend_dataset_.push_back(static_cast<uint32_t>(best));
    blend_local_.push_back(blend_counts_[best]++);
  }
  return {blend_dataset_[static_cast<size_t>(position)], blend_local_[static_cast<size_t>(position)]};
}

std::pair<size_t, int64_t> DataLoader::origin(int64_t global_index) const {
  if (global_index < 0) throw DataError(fmt::format("sample index {} is negative", global_index));
  const int64_t epoch = global_index / samples_per_epoch_;
  const int64_t position = global_index % samples_per_epoch_;
  const uint64_t key = options_.seed * 0x9E3779B97F4A7C15ull + static_cast<uint64_t>(epoch);
  const IndexPermutation order(static_cast<uint64_t>(samples_per_epoch_), key);
  const auto [dataset, local] = blend(static_cast<int64_t>(order(static_cast<uint64_t>(position))));
  // A dataset over-sampled by its weight wraps around its own (reshuffled) samples.
  const PackedDataset& d = datasets_[dataset];
  const int64_t wrap = local / d.num_samples();
  const IndexPermutation inner(static_cast<uint64_t>(d.num_samples()), key ^ splitmix64(dataset + 1 + 977 * static_cast<uint64_t>(wrap)));
  return {dataset, static_cast<int64_t>(inner(static_cast<uint64_t>(local % d.num_samples())))};
}

std::vector<int32_t> DataLoader::sample(int64_t global_index) const {
  const auto [dataset, k] = origin(global_index);
  std::vector<int32_t> tokens = datasets_[dataset].sample(k);
  return options_.fim ? options_.fim->apply(tokens, global_index) : tokens;
}

std::string DataLoader::describe_sample(int64_t global_index) const {
  const auto [dataset, k] = origin(global_index);
  const int64_t begin = k * options_.seq_len;
  return fmt::format("{} sample {} (tokens [{}, {}) of its {} split)", datasets_[dataset].prefix(), k, begin,
                     begin + options_.seq_len + 1, options_.split == Split::train ? "train" : "validation");
}

Batch DataLoader::batch(const std::vector<int64_t>& global_indices) const {
  Batch b;
  b.size = static_cast<int64_t>(global_indices.size());
  b.width = options_.seq_len + 1;
  b.tokens.reserve(static_cast<size_t>(b.size * b.width));
  for (int64_t index : global_indices) {
    const std::vector<int32_t> s = sample(index);
    b.tokens.insert(b.tokens.end(), s.begin(), s.end());
  }
  b.sample_indices = global_indices;
  return b;
}

Batch DataLoader::rank_batch(int64_t first_sample, int64_t global_batch, int64_t rank, int64_t world) const {
  if (world <= 0 || rank < 0 || rank >= world || global_batch % world != 0) {
    throw DataError(fmt::format("rank_batch: global batch {} must split evenly over {} ranks (rank {})", global_batch,
                                world, rank));
  }
  const int64_t per_rank = global_batch / world;
  std::vector<int64_t> indices(static_cast<size_t>(per_rank));
  for (int64_t i = 0; i < per_rank; ++i) indices[static_cast<size_t>(i)] = first_sample + rank * per_rank + i;
  return batch(indices);
}

}  // namespace latentmoe::data
