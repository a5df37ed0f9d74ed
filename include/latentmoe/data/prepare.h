// `latentmoe prepare-data`: text (.txt = one document per file; .jsonl = one JSON object per
// line with a text field) → Megatron IndexedDataset, EOS appended per document, tokenized by
// several threads, written in input order. No torch headers.
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

namespace latentmoe::data {

struct PrepareOptions {
  std::string tokenizer;
  std::vector<std::string> inputs;  // files, directories (recursive) or glob patterns
  std::string output_prefix;
  int64_t workers = 1;
  std::string json_key = "text";
  bool append_eos = true;
};

struct PrepareProgress {
  int64_t documents = 0, tokens = 0, bytes = 0;
  double seconds = 0;
};

// Sorted list of input files (.txt, .jsonl, .json) after expanding directories and globs.
// Throws DataError naming a pattern that matches nothing.
std::vector<std::string> expand_inputs(const std::vector<std::string>& inputs);

PrepareProgress prepare_data(const PrepareOptions& options,
                             const std::function<void(const PrepareProgress&, bool done)>& on_progress = {});

}  // namespace latentmoe::data
