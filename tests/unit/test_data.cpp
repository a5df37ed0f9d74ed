// Megatron IndexedDataset files (round trip, corruption), the deterministic loader (resume, data
// parallel slicing, changing the DP degree, epochs, blending) and tokenizer input errors.
#include <gtest/gtest.h>

#include <algorithm>
#include <fstream>
#include <nlohmann/json.hpp>
#include <numeric>
#include <set>

#include "latentmoe/data/fim.h"
#include "latentmoe/data/indexed_dataset.h"
#include "latentmoe/data/loader.h"
#include "latentmoe/data/prefetch.h"
#include "latentmoe/data/tokenizer.h"
#include "latentmoe/io/safetensors_format.h"
#include "latentmoe/util/error.h"
#include "test_util.h"

using latentmoe::testing::expect_error_contains;
using latentmoe::testing::TempDir;
namespace data = latentmoe::data;
namespace io = latentmoe::io;

namespace {
// Documents of lengths 1..n with token values encoding (document, position).
std::string write_dataset(const TempDir& dir, const std::string& name, int docs, int base = 0) {
  const std::string prefix = (dir.path() / name).string();
  data::IndexedDatasetWriter w(prefix, data::TokenDtype::u16);
  for (int d = 0; d < docs; ++d) {
    std::vector<int32_t> tokens;
    for (int i = 0; i < 5 + (d * 7) % 23; ++i) tokens.push_back(base + d * 100 + i);
    w.add_document(tokens);
  }
  w.finalize();
  return prefix;
}

std::vector<std::vector<int32_t>> rows(const data::Batch& b) {
  std::vector<std::vector<int32_t>> out;
  for (int64_t r = 0; r < b.size; ++r) out.emplace_back(b.tokens.begin() + r * b.width, b.tokens.begin() + (r + 1) * b.width);
  return out;
}

void patch(const std::string& path, size_t offset, const std::string& bytes) {
  std::fstream f(path, std::ios::in | std::ios::out | std::ios::binary);
  f.seekp(static_cast<std::streamoff>(offset));
  f.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
}
}  // namespace

TEST(IndexedDataset, RoundTripAndLayout) {
  TempDir dir;
  const std::string prefix = write_dataset(dir, "d", 6);
  const data::IndexedDataset d(prefix);
  EXPECT_EQ(d.num_sequences(), 6);
  EXPECT_EQ(d.num_documents(), 6);
  EXPECT_EQ(d.dtype(), data::TokenDtype::u16);
  std::vector<int32_t> ids;
  d.read(2, 1, 3, ids);
  EXPECT_EQ(ids, (std::vector<int32_t>{201, 202, 203}));
  EXPECT_EQ(std::filesystem::file_size(prefix + ".idx"), 9u + 8 + 1 + 8 + 8 + 6 * 12 + 7 * 8);
  EXPECT_FALSE(std::filesystem::exists(prefix + ".bin.tmp"));
}

TEST(IndexedDataset, CorruptFilesNameFileExpectedAndActual) {
  TempDir dir;
  const std::string prefix = write_dataset(dir, "d", 4);
  const auto copy = [&](const std::string& name) {
    const std::string p = (dir.path() / name).string();
    std::filesystem::copy_file(prefix + ".bin", p + ".bin");
    std::filesystem::copy_file(prefix + ".idx", p + ".idx");
    return p;
  };
  const std::string magic = copy("magic");
  patch(magic + ".idx", 0, "XXXX");
  expect_error_contains<data::DataError>([&] { data::IndexedDataset d(magic); }, {"magic.idx: wrong magic"});
  const std::string version = copy("version");
  patch(version + ".idx", 9, std::string("\x02", 1));
  expect_error_contains<data::DataError>([&] { data::IndexedDataset d(version); }, {"version.idx: version 2 is not supported (expected 1)"});
  const std::string count = copy("count");
  patch(count + ".idx", 18, std::string("\x09", 1));  // claims 9 sequences
  expect_error_contains<data::DataError>([&] { data::IndexedDataset d(count); }, {"count.idx: 9 sequences", "the file has"});
  const std::string trunc = copy("trunc");
  std::filesystem::resize_file(trunc + ".bin", std::filesystem::file_size(trunc + ".bin") - 2);
  expect_error_contains<data::DataError>([&] { data::IndexedDataset d(trunc); }, {"trunc.bin:", "truncated or mismatched"});
  const std::string code = copy("code");
  patch(code + ".idx", 17, std::string("\x09", 1));
  expect_error_contains<data::DataError>([&] { data::IndexedDataset d(code); }, {"unknown dtype code 9"});
  const std::string tiny = copy("tiny");
  std::filesystem::resize_file(tiny + ".idx", 10);
  expect_error_contains<data::DataError>([&] { data::IndexedDataset d(tiny); }, {"tiny.idx: truncated: 10 bytes"});
  expect_error_contains<data::DataError>([&] { data::IndexedDataset d((dir.path() / "none").string()); }, {"none.idx: cannot open"});
}

// Parsers of untrusted bytes, as the fuzz targets call them (tests/fuzz).
TEST(IndexedDataset, AnEmptyIndexParses) {  // UBSan: no memcpy from the null data of empty vectors
  std::string idx("MMIDIDX\0\0", 9);
  const auto put = [&](auto v) { idx.append(reinterpret_cast<const char*>(&v), sizeof(v)); };
  put(uint64_t{1}), put(uint8_t{8}), put(uint64_t{0}), put(uint64_t{1}), put(int64_t{0});
  const data::IndexedDatasetIndex none = data::parse_indexed_dataset_index(idx, "empty.idx");  // no memcpy from null
  EXPECT_EQ(none.bin_bytes, 0);
  EXPECT_TRUE(none.lengths.empty());
}

TEST(Tokenizer, TokenIdsMustBeExactIntegersInRange) {
  const auto load = [](const std::string& id) {
    return data::Tokenizer::from_json_text(R"({"model": {"type": "BPE", "vocab": {"a": )" + id + R"(}, "merges": []}})", "t.json");
  };
  EXPECT_EQ(load("0").vocab_size(), 1);
  for (const std::string bad : {"-1", "3.19e21", "1.5", "16777216", "18446744073709551615", "\"7\""}) {
    expect_error_contains<data::TokenizerError>([&] { load(bad); }, {"t.json: token 'a' has id", "ids must be integers in [0, 16777215]"});
  }
}

TEST(SafetensorsHeader, ParsesAndRejectsByTensorName) {
  const auto file = [](const std::string& header, size_t data_bytes) {
    std::string bytes(8, '\0');
    uint64_t n = header.size();
    for (int i = 0; i < 8; ++i) bytes[i] = static_cast<char>((n >> (8 * i)) & 0xff);
    return bytes + header + std::string(data_bytes, '\0');
  };
  const auto parse = [](const std::string& bytes) {
    return io::parse_safetensors_header(reinterpret_cast<const uint8_t*>(bytes.data()), bytes.size(), "m.safetensors");
  };
  const auto ok = parse(file(R"({"w": {"dtype": "BF16", "shape": [2, 3], "data_offsets": [0, 12]}, "__metadata__": {"k": "v"}})", 12));
  EXPECT_EQ(ok.entries.at("w").shape, (std::vector<int64_t>{2, 3}));
  EXPECT_EQ(ok.metadata.at("k"), "v");
  expect_error_contains<io::SafetensorsError>(
      [&] { parse(file(R"({"w": {"dtype": "U8", "shape": [9223372036854775808], "data_offsets": [0, 0]}})", 0)); },
      {"m.safetensors: tensor 'w': shape is too large"});
  expect_error_contains<io::SafetensorsError>(
      [&] { parse(file(R"({"w": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}})", 4)); },
      {"tensor 'w': data_offsets [0, 8] exceed the data buffer of 4 bytes"});
  expect_error_contains<io::SafetensorsError>([&] { parse(std::string(5, '\0')); }, {"truncated: 5 bytes"});
  expect_error_contains<io::SafetensorsError>(
      [] { io::parse_safetensors_index(R"({"weight_map": {"w": "a/../../x.safetensors"}})", "i.json"); },
      {"i.json: shard path 'a/../../x.safetensors' for 'w' leaves the checkpoint directory"});
  EXPECT_EQ(io::parse_safetensors_index(R"({"weight_map": {"w": "s/1.safetensors"}})", "i.json").at("w"), "s/1.safetensors");
}

TEST(IndexPermutation, IsABijectionAndKeyed) {
  for (uint64_t n : {1ull, 2ull, 7ull, 100ull, 1000ull, 4097ull}) {
    const data::IndexPermutation p(n, 42);
    std::set<uint64_t> seen;
    for (uint64_t i = 0; i < n; ++i) seen.insert(p(i));
    EXPECT_EQ(seen.size(), n);
    EXPECT_EQ(*seen.rbegin(), n - 1);
  }
  const data::IndexPermutation a(1000, 1), b(1000, 2);
  int same = 0;
  for (uint64_t i = 0; i < 1000; ++i) same += a(i) == b(i);
  EXPECT_LT(same, 20);
}

TEST(Loader, SamplesArePackedDocumentsWithOverlap) {
  TempDir dir;
  const data::DataLoader loader({write_dataset(dir, "d", 30)}, {.seq_len = 8, .valid_fraction = 0.0});
  std::set<std::vector<int32_t>> samples;
  for (int64_t i = 0; i < loader.samples_per_epoch(); ++i) {
    const auto s = loader.sample(i);
    ASSERT_EQ(s.size(), 9u);
    samples.insert(s);
  }
  EXPECT_EQ(static_cast<int64_t>(samples.size()), loader.samples_per_epoch()) << "each packed sample once per epoch";
  EXPECT_NE(loader.sample(0), loader.sample(loader.samples_per_epoch())) << "epochs are reshuffled";
}

TEST(Loader, ResumeEqualsUninterruptedAndRanksPartitionTheBatch) {
  TempDir dir;
  const std::string prefix = write_dataset(dir, "d", 40);
  const data::LoaderOptions options{.seq_len = 6, .seed = 7, .valid_fraction = 0.1};
  const int64_t global_batch = 4;
  std::vector<std::vector<int32_t>> straight;
  {
    const data::DataLoader loader({prefix}, options);
    for (int64_t step = 0; step < 10; ++step) {
      for (auto& r : rows(loader.rank_batch(step * global_batch, global_batch, 0, 1))) straight.push_back(r);
    }
  }
  // Stop after 4 steps; a fresh loader resumes from consumed_samples = 16.
  std::vector<std::vector<int32_t>> resumed;
  {
    const data::DataLoader first({prefix}, options);
    for (int64_t step = 0; step < 4; ++step) {
      for (auto& r : rows(first.rank_batch(step * global_batch, global_batch, 0, 1))) resumed.push_back(r);
    }
  }
  const data::DataLoader second({prefix}, options);
  for (int64_t step = 4; step < 10; ++step) {
    for (auto& r : rows(second.rank_batch(step * global_batch, global_batch, 0, 1))) resumed.push_back(r);
  }
  EXPECT_EQ(resumed, straight);

  // Two ranks: the union (in rank order) of each global batch is the one-rank batch.
  std::vector<std::vector<int32_t>> two_ranks;
  for (int64_t step = 0; step < 10; ++step) {
    for (int64_t rank = 0; rank < 2; ++rank) {
      for (auto& r : rows(second.rank_batch(step * global_batch, global_batch, rank, 2))) two_ranks.push_back(r);
    }
  }
  EXPECT_EQ(two_ranks, straight);

  // Save at 1 rank after 3 steps, resume at 4 ranks (and 2): the sample index sets do not overlap
  // and leave no gap.
  std::set<int64_t> consumed;
  for (int64_t step = 0; step < 3; ++step) {
    for (int64_t i : second.rank_batch(step * global_batch, global_batch, 0, 1).sample_indices) consumed.insert(i);
  }
  for (int64_t step = 3; step < 6; ++step) {
    for (int64_t rank = 0; rank < 4; ++rank) {
      for (int64_t i : second.rank_batch(step * global_batch, global_batch, rank, 4).sample_indices) {
        EXPECT_TRUE(consumed.insert(i).second) << "sample " << i << " repeated";
      }
    }
  }
  EXPECT_EQ(consumed.size(), 24u);
  EXPECT_EQ(*consumed.rbegin(), 23) << "no sample skipped";
}

TEST(Loader, ValidationSplitIsDisjointByDocument) {
  TempDir dir;
  const std::string prefix = write_dataset(dir, "d", 200);
  const data::DataLoader train({prefix}, {.seq_len = 4, .valid_fraction = 0.2, .split = data::Split::train});
  const data::DataLoader valid({prefix}, {.seq_len = 4, .valid_fraction = 0.2, .split = data::Split::valid});
  std::set<int32_t> train_docs, valid_docs;
  for (int64_t i = 0; i < train.samples_per_epoch(); ++i) for (int32_t t : train.sample(i)) train_docs.insert(t / 100);
  for (int64_t i = 0; i < valid.samples_per_epoch(); ++i) for (int32_t t : valid.sample(i)) valid_docs.insert(t / 100);
  for (int32_t d : valid_docs) EXPECT_FALSE(train_docs.count(d)) << "document " << d << " in both splits";
  EXPECT_GT(valid_docs.size(), 20u);
  EXPECT_LT(valid_docs.size(), 60u);
}

TEST(Loader, BlendingFollowsTheWeights) {
  TempDir dir;
  const std::string a = write_dataset(dir, "a", 50, 0), b = write_dataset(dir, "b", 50, 10000);
  const data::DataLoader loader({a, b}, {.seq_len = 4, .valid_fraction = 0.0, .weights = {3.0, 1.0}});
  int from_b = 0;
  const int n = 400;
  for (int i = 0; i < n; ++i) from_b += loader.sample(i)[0] >= 10000;
  EXPECT_NEAR(from_b, n / 4, 5);
}

TEST(Loader, BadInputs) {
  TempDir dir;
  const std::string prefix = write_dataset(dir, "d", 10);
  expect_error_contains<data::DataError>([&] { data::DataLoader l({prefix}, {.seq_len = 4, .vocab_size = 500}); },
                                         {"d.bin: token id 9", ">= model.vocab_size 500"});
  expect_error_contains<data::DataError>([&] { data::DataLoader l({prefix}, {.seq_len = 100000}); },
                                         {"fewer than one sample of train.seq_len + 1 = 100001 tokens"});
  {
    data::IndexedDatasetWriter empty((dir.path() / "empty").string(), data::TokenDtype::u16);
    empty.finalize();
  }
  expect_error_contains<data::DataError>([&] { data::DataLoader l({(dir.path() / "empty").string()}, {.seq_len = 4}); },
                                         {"empty: the train split has 0 tokens in 0 documents"});
  expect_error_contains<data::DataError>([&] { data::DataLoader l({}, {}); }, {"data.paths is empty"});
  const data::DataLoader ok({prefix}, {.seq_len = 4, .valid_fraction = 0.0});
  expect_error_contains<data::DataError>([&] { ok.rank_batch(0, 5, 0, 2); }, {"global batch 5 must split evenly over 2 ranks"});
}

TEST(Tokenizer, RejectsBadFilesAndInvalidUtf8) {
  TempDir dir;
  expect_error_contains<data::TokenizerError>([&] { data::Tokenizer::from_file((dir.path() / "none.json").string()); },
                                              {"none.json: cannot open tokenizer file"});
  expect_error_contains<data::TokenizerError>([&] { data::Tokenizer::from_file(dir.write("bad.json", "{oops")); },
                                              {"bad.json: malformed tokenizer.json"});
  const data::Tokenizer tok =
      data::Tokenizer::from_file(std::string(LATENTMOE_SOURCE_DIR) + "/data/tokenizer/python-docs-bpe-8k.json");
  EXPECT_EQ(tok.vocab_size(), 8192);
  EXPECT_EQ(tok.eos_id(), tok.token_id("<|end_of_text|>"));
  expect_error_contains<data::TokenizerError>([&] { tok.encode("ok \xC3\x28 bad"); }, {"not valid UTF-8 (bad byte 0xc3 at offset 3)"});
  expect_error_contains<data::TokenizerError>([&] { tok.encode("\xED\xA0\x80"); }, {"not valid UTF-8"});  // surrogate
  expect_error_contains<data::TokenizerError>([&] { tok.decode({9000}); }, {"cannot decode id 9000"});
  const std::string text = "round trip: ünïcode 🎉 <|end_of_text|>\r\n  end";
  EXPECT_EQ(tok.decode(tok.encode(text)), text);
}

namespace {
// The bundled tokenizer plus StarCoder-style FIM tokens (ids 8192..8195).
std::shared_ptr<const data::Tokenizer> fim_tokenizer(const TempDir& dir) {
  std::ifstream in(LATENTMOE_SOURCE_DIR "/data/tokenizer/python-docs-bpe-8k.json");
  nlohmann::json j = nlohmann::json::parse(in);
  int id = 8192;
  for (const char* name : {"<fim_prefix>", "<fim_middle>", "<fim_suffix>", "<fim_pad>"}) {
    j["added_tokens"].push_back({{"id", id++}, {"content", name}, {"single_word", false}, {"lstrip", false},
                                 {"rstrip", false}, {"normalized", false}, {"special", true}});
  }
  const std::string path = (dir.path() / "fim-tokenizer.json").string();
  std::ofstream(path) << j.dump();
  return std::make_shared<const data::Tokenizer>(data::Tokenizer::from_file(path));
}
}  // namespace

TEST(Fim, PsmAndSpmRearrangeEachDocumentAndKeepTheLength) {
  TempDir dir;
  const auto tokenizer = fim_tokenizer(dir);
  const int32_t eos = *tokenizer->eos_id();
  // The second document is long enough to absorb what FIM adds to the first (3 special tokens and
  // re-encoding differences): the end of the sample is truncated, the first segment stays whole.
  const std::string first = "def area(r):\n    return 3.14159 * r ** 2  # ünïcode ✓\n",
                    second = "The second document of this sample, which the first one's growth pushes past the end.";
  std::vector<int32_t> sample = tokenizer->encode(first);
  sample.push_back(eos);
  const size_t first_end = sample.size();
  const std::vector<int32_t> tail = tokenizer->encode(second);
  sample.insert(sample.end(), tail.begin(), tail.end());
  sample.push_back(eos);

  const data::FimTokens ids = data::find_fim_tokens(*tokenizer);
  EXPECT_EQ(ids.prefix, 8192);
  EXPECT_EQ(ids.pad, 8195);
  const auto piece = [&](const std::vector<int32_t>& v, size_t a, size_t b) {
    return tokenizer->decode(std::vector<int32_t>(v.begin() + static_cast<std::ptrdiff_t>(a), v.begin() + static_cast<std::ptrdiff_t>(b)));
  };
  const data::FimTransform psm(tokenizer, 1.0, 0.0, 7), spm(tokenizer, 1.0, 1.0, 7), none(tokenizer, 0.0, 0.0, 7);
  int cut_differently = 0;
  std::string previous;
  for (int64_t index = 0; index < 20; ++index) {
    const std::vector<int32_t> out = psm.apply(sample, index);
    ASSERT_EQ(out.size(), sample.size());
    EXPECT_EQ(out, psm.apply(sample, index));  // keyed by the sample index: reproducible
    // PSM: <prefix> prefix <suffix> suffix <middle> middle <eos> ...
    ASSERT_EQ(out[0], ids.prefix);
    const size_t s = std::find(out.begin(), out.end(), ids.suffix) - out.begin();
    const size_t m = std::find(out.begin(), out.end(), ids.middle) - out.begin();
    const size_t e = std::find(out.begin(), out.end(), eos) - out.begin();
    ASSERT_LT(s, m);
    ASSERT_LT(m, e);
    EXPECT_EQ(piece(out, 1, s) + piece(out, m + 1, e) + piece(out, s + 1, m), first);
    cut_differently += piece(out, 1, s) != previous;
    previous = piece(out, 1, s);

    const std::vector<int32_t> swapped = spm.apply(sample, index);
    ASSERT_EQ(swapped.size(), sample.size());
    // SPM: <prefix> <suffix> suffix <middle> prefix middle <eos>
    ASSERT_EQ(swapped[0], ids.prefix);
    ASSERT_EQ(swapped[1], ids.suffix);
    const size_t m2 = std::find(swapped.begin(), swapped.end(), ids.middle) - swapped.begin();
    const size_t e2 = std::find(swapped.begin(), swapped.end(), eos) - swapped.begin();
    EXPECT_EQ(piece(swapped, m2 + 1, e2) + piece(swapped, 2, m2), first);
  }
  EXPECT_GT(cut_differently, 10);
  EXPECT_EQ(none.apply(sample, 3), sample);
  EXPECT_LE(first_end, sample.size());

  const auto plain = std::make_shared<const data::Tokenizer>(
      data::Tokenizer::from_file(LATENTMOE_SOURCE_DIR "/data/tokenizer/python-docs-bpe-8k.json"));
  expect_error_contains<latentmoe::ConfigError>([&] { data::FimTransform f(plain, 0.1, 0.0, 1); },
                                                {"python-docs-bpe-8k.json has neither set", "<fim_prefix>", "<｜fim▁begin｜>",
                                                 "data.fim_rate=0"});
}

TEST(Prefetch, BackgroundBatchesEqualTheLoadersInAnyOrder) {
  TempDir dir;
  // Two blended datasets: the lazily grown blend table is shared by the workers.
  const data::DataLoader loader({write_dataset(dir, "a", 30), write_dataset(dir, "b", 20, 1000)},
                                {.seq_len = 8, .valid_fraction = 0.0, .weights = {0.3, 0.7}});
  data::BatchPrefetcher prefetcher(loader, 3);
  std::vector<data::BatchPrefetcher::Request> requests;
  for (int64_t first = 0; first < 400; first += 4) requests.push_back({first, 4});
  prefetcher.prefetch(requests);
  prefetcher.prefetch(requests);  // queued once
  EXPECT_LE(prefetcher.queued(), static_cast<int64_t>(requests.size()));
  for (size_t i = 0; i < requests.size(); ++i) {
    const auto& r = requests[(i * 37) % requests.size()];  // another order than queued
    EXPECT_EQ(prefetcher.get(r.first_sample, r.count).tokens, loader.rank_batch(r.first_sample, r.count, 0, 1).tokens);
  }
  EXPECT_EQ(prefetcher.queued(), 0);
  EXPECT_EQ(prefetcher.get(1000, 2).tokens, loader.rank_batch(1000, 2, 0, 1).tokens);  // never queued
  prefetcher.prefetch({{-4, 4}});
  EXPECT_THROW(prefetcher.get(-4, 4), data::DataError);  // a worker's error reaches the caller
}

TEST(SafetensorsHeader, AnEmptyTensorDoesNotHideAnOverlapAndEmptyShapesAreBounded) {
  const auto file = [](const std::string& header, size_t data_bytes) {
    std::string bytes(8, '\0');
    for (int i = 0; i < 8; ++i) bytes[i] = static_cast<char>((header.size() >> (8 * i)) & 0xff);
    return bytes + header + std::string(data_bytes, '\0');
  };
  const auto parse = [](const std::string& bytes) {
    return io::parse_safetensors_header(reinterpret_cast<const uint8_t*>(bytes.data()), bytes.size(), "m.safetensors");
  };
  expect_error_contains<io::SafetensorsError>(
      [&] {
        parse(file(R"({"a": {"dtype": "U8", "shape": [100], "data_offsets": [0, 100]},
                      "b": {"dtype": "U8", "shape": [0], "data_offsets": [50, 50]},
                      "c": {"dtype": "U8", "shape": [10], "data_offsets": [60, 70]}})", 100));
      },
      {"tensors 'a' [0, 100] and 'c' [60, 70] overlap"});
  expect_error_contains<io::SafetensorsError>(
      [&] { parse(file(R"({"e": {"dtype": "F32", "shape": [0, 4611686018427387904, 4611686018427387904], "data_offsets": [0, 0]}})", 0)); },
      {"tensor 'e': shape is too large"});
}
