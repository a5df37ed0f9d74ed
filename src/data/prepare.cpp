// prepare-data: read documents in chunks, encode each chunk on `workers` threads, append in order.
#include "latentmoe/data/prepare.h"

#include <fmt/format.h>
#include <glob.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <thread>

#include "latentmoe/data/indexed_dataset.h"
#include "latentmoe/data/tokenizer.h"
#include "latentmoe/util/atomic_file.h"

namespace latentmoe::data {

namespace fs = std::filesystem;

namespace {
bool is_text_input(const fs::path& p) {
  const std::string ext = p.extension().string();
  return ext == ".txt" || ext == ".jsonl" || ext == ".json";
}

struct Document {
  std::string text;
  std::string origin;  // file or file:line, for errors
};

// Streams documents from the input files, `limit_bytes` at a time.
class DocumentReader {
 public:
  DocumentReader(std::vector<std::string> files, std::string json_key) : files_(std::move(files)), key_(std::move(json_key)) {}

  std::vector<Document> next_chunk(size_t limit_bytes) {
    std::vector<Document> chunk;
    size_t bytes = 0;
    while (bytes < limit_bytes && file_ < files_.size()) {
      const std::string& path = files_[file_];
      if (fs::path(path).extension() == ".txt") {
        std::optional<std::string> read = read_text_file(path);
        if (!read) throw DataError(fmt::format("{}: cannot open", path));
        std::string text = *std::move(read);
        bytes += text.size();
        chunk.push_back({std::move(text), path});
        ++file_;
        continue;
      }
      if (!jsonl_.is_open()) {
        jsonl_.open(path, std::ios::binary);
        line_ = 0;
        if (!jsonl_) throw DataError(fmt::format("{}: cannot open", path));
      }
      std::string line;
      if (!std::getline(jsonl_, line)) {
        jsonl_.close();
        ++file_;
        continue;
      }
      ++line_;
      if (line.find_first_not_of(" \t\r") == std::string::npos) continue;
      const std::string where = fmt::format("{}:{}", path, line_);
      nlohmann::json j;
      try {
        j = nlohmann::json::parse(line);
      } catch (const nlohmann::json::exception& e) {
        throw DataError(fmt::format("{}: not a JSON object: {}", where, e.what()));
      }
      if (!j.is_object() || !j.contains(key_) || !j[key_].is_string()) {
        throw DataError(fmt::format("{}: expected a JSON object with a string field '{}' (set --json-key)", where, key_));
      }
      std::string text = j[key_].get<std::string>();
      bytes += text.size();
      chunk.push_back({std::move(text), where});
    }
    return chunk;
  }

 private:
  std::vector<std::string> files_;
  std::string key_;
  size_t file_ = 0;
  std::ifstream jsonl_;
  int64_t line_ = 0;
};
}  // namespace

std::vector<std::string> expand_inputs(const std::vector<std::string>& inputs) {
  std::vector<std::string> files;
  for (const auto& input : inputs) {
    std::vector<std::string> found;
    if (fs::is_directory(input)) {
      for (const auto& e : fs::recursive_directory_iterator(input)) {
        if (e.is_regular_file() && is_text_input(e.path())) found.push_back(e.path().string());
      }
    } else if (fs::is_regular_file(input)) {
      found.push_back(input);
    } else {
      glob_t g{};
      if (::glob(input.c_str(), 0, nullptr, &g) == 0) {
        for (size_t i = 0; i < g.gl_pathc; ++i) {
          if (fs::is_regular_file(g.gl_pathv[i])) found.emplace_back(g.gl_pathv[i]);
        }
      }
      globfree(&g);
    }
    if (found.empty()) throw DataError(fmt::format("--input '{}': no .txt/.jsonl files match", input));
    for (const auto& f : found) {
      if (!is_text_input(f)) throw DataError(fmt::format("--input '{}': unsupported file type (use .txt or .jsonl)", f));
    }
    std::sort(found.begin(), found.end());
    files.insert(files.end(), found.begin(), found.end());
  }
  return files;
}

PrepareProgress prepare_data(const PrepareOptions& options,
                             const std::function<void(const PrepareProgress&, bool)>& on_progress) {
  if (options.workers < 1) throw DataError(fmt::format("--workers must be >= 1, got {}", options.workers));
  const Tokenizer tokenizer = Tokenizer::from_file(options.tokenizer);
  const auto eos = tokenizer.eos_id();
  if (options.append_eos && !eos) {
    throw DataError(fmt::format("{}: no end-of-text token (<|end_of_text|>, <|endoftext|>, </s>, ...) to end documents with",
                                options.tokenizer));
  }
  DocumentReader reader(expand_inputs(options.inputs), options.json_key);
  IndexedDatasetWriter writer(options.output_prefix, token_dtype_for_vocab(tokenizer.vocab_size()));
  PrepareProgress progress;
  const auto start = std::chrono::steady_clock::now();
  auto last_report = start;
  while (true) {
    std::vector<Document> chunk = reader.next_chunk(8u << 20);
    if (chunk.empty()) break;
    std::vector<std::vector<int32_t>> encoded(chunk.size());
    std::vector<std::string> errors(chunk.size());
    std::atomic<size_t> next{0};
    const auto work = [&] {
      for (size_t i = next++; i < chunk.size(); i = next++) {
        try {
          encoded[i] = tokenizer.encode(chunk[i].text);
          if (options.append_eos) encoded[i].push_back(*eos);
        } catch (const std::exception& e) {
          errors[i] = fmt::format("{}: {}", chunk[i].origin, e.what());
        }
      }
    };
    std::vector<std::thread> threads;
    for (int64_t t = 1; t < options.workers; ++t) threads.emplace_back(work);
    work();
    for (auto& t : threads) t.join();
    for (size_t i = 0; i < chunk.size(); ++i) {
      if (!errors[i].empty()) throw DataError(errors[i]);
      writer.add_document(encoded[i]);
      progress.bytes += static_cast<int64_t>(chunk[i].text.size());
    }
    progress.documents = writer.documents();
    progress.tokens = writer.tokens();
    const auto now = std::chrono::steady_clock::now();
    progress.seconds = std::chrono::duration<double>(now - start).count();
    if (on_progress && now - last_report > std::chrono::milliseconds(500)) {
      on_progress(progress, false);
      last_report = now;
    }
  }
  if (writer.documents() == 0) throw DataError("prepare-data: the inputs hold no documents");
  writer.finalize();
  progress.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  if (on_progress) on_progress(progress, true);
  return progress;
}

}  // namespace latentmoe::data
