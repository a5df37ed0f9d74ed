// `latentmoe prepare-data` (text → Megatron .bin/.idx) and `latentmoe tokenize` (encode/decode,
// and a single-thread throughput measurement used by bench/tokenizer_throughput.py).
#include <unistd.h>

#include <algorithm>
#include <climits>
#include <chrono>
#include <thread>
#include <cstdio>
#include <fstream>
#include <iostream>

#include "commands.h"
#include "latentmoe/data/indexed_dataset.h"
#include "latentmoe/data/prepare.h"
#include "latentmoe/data/tokenizer.h"
#include "latentmoe/util/atomic_file.h"
#include "latentmoe/util/log.h"

namespace latentmoe::cli {

namespace {
std::string default_tokenizer() { return std::string(LATENTMOE_SOURCE_DIR) + "/data/tokenizer/python-docs-bpe-8k.json"; }

std::string read_file(const std::string& path) {
  std::optional<std::string> text = read_text_file(path);
  if (!text) throw ConfigError("cannot open '" + path + "'");
  return *std::move(text);
}
}  // namespace

void add_prepare_data_command(CLI::App& app, int& exit_code) {
  auto* cmd = app.add_subcommand("prepare-data", "Tokenize text (.txt, .jsonl) into a Megatron-compatible .bin/.idx dataset");
  auto o = std::make_shared<data::PrepareOptions>();
  o->tokenizer = default_tokenizer();
  o->workers = std::max<int64_t>(1, static_cast<int64_t>(std::thread::hardware_concurrency()));
  cmd->add_option("--tokenizer", o->tokenizer, "HF tokenizer.json")->capture_default_str();
  cmd->add_option("--input", o->inputs, "Files, directories or globs (.txt = one document, .jsonl = one per line)")
      ->required();
  cmd->add_option("--output", o->output_prefix, "Output prefix (writes PREFIX.bin and PREFIX.idx)")->required();
  cmd->add_option("--workers", o->workers, "Tokenizer threads")->capture_default_str();
  cmd->add_option("--json-key", o->json_key, "Text field of .jsonl records")->capture_default_str();
  cmd->callback([o, &exit_code] {
    const bool tty = ::isatty(STDERR_FILENO) != 0;
    const auto report = [tty](const data::PrepareProgress& p, bool done) {
      const double mb = static_cast<double>(p.bytes) / 1e6;
      const std::string line = fmt::format("prepare-data: {} documents, {} tokens, {:.1f} MB in {:.1f}s ({:.2f} MB/s, {:.0f} tokens/s)",
                                           p.documents, p.tokens, mb, p.seconds, mb / std::max(p.seconds, 1e-9),
                                           static_cast<double>(p.tokens) / std::max(p.seconds, 1e-9));
      if (tty) {
        std::fprintf(stderr, "\r%s%s", line.c_str(), done ? "\n" : "");
      } else if (done) {
        std::fprintf(stderr, "%s\n", line.c_str());
      }
    };
    data::prepare_data(*o, report);
    LMOE_INFO("wrote {}.bin and {}.idx", o->output_prefix, o->output_prefix);
    exit_code = kExitOk;
  });
}

void add_inspect_data_command(CLI::App& app, int& exit_code) {
  auto* cmd = app.add_subcommand("inspect-data", "Validate a .bin/.idx dataset and print its summary (and some sequences)");
  auto prefix = std::make_shared<std::string>();
  auto sequences = std::make_shared<std::vector<int64_t>>();
  cmd->add_option("--dataset", *prefix, "Dataset prefix (PREFIX.bin + PREFIX.idx)")->required();
  cmd->add_option("--sequence", *sequences, "Print the token ids of these sequences");
  cmd->callback([prefix, sequences, &exit_code] {
    const data::IndexedDataset d(*prefix);
    std::cout << fmt::format("{{\"sequences\": {}, \"documents\": {}, \"tokens\": {}, \"dtype_code\": {}, \"max_token\": {}}}\n",
                             d.num_sequences(), d.num_documents(), d.total_tokens(), static_cast<int>(d.dtype()),
                             d.max_token());
    for (int64_t s : *sequences) {
      if (s < 0 || s >= d.num_sequences()) {
        throw ConfigError(fmt::format("--sequence {} is outside [0, {})", s, d.num_sequences()));
      }
      std::vector<int32_t> ids;
      d.read(s, 0, d.sequence_length(s), ids);
      for (size_t i = 0; i < ids.size(); ++i) std::cout << (i ? "," : "") << ids[i];
      std::cout << "\n";
    }
    exit_code = kExitOk;
  });
}

void add_tokenize_command(CLI::App& app, int& exit_code) {
  auto* cmd = app.add_subcommand("tokenize", "Encode text or decode ids with a tokenizer.json; measure encode speed");
  struct Args {
    std::string tokenizer = default_tokenizer(), text, file, decode;
    std::vector<std::string> bench;
  };
  auto a = std::make_shared<Args>();
  cmd->add_option("--tokenizer", a->tokenizer, "HF tokenizer.json")->capture_default_str();
  cmd->add_option("--text", a->text, "Text to encode (ids printed comma-separated)");
  cmd->add_option("--file", a->file, "File whose text to encode");
  cmd->add_option("--decode", a->decode, "Comma-separated ids to decode");
  cmd->add_option("--bench", a->bench, "Files: encode each once on one thread and print MB/s");
  cmd->callback([a, &exit_code] {
    const data::Tokenizer tok = data::Tokenizer::from_file(a->tokenizer);
    if (!a->bench.empty()) {
      std::vector<std::string> texts;
      size_t bytes = 0;
      for (const auto& f : data::expand_inputs(a->bench)) {
        texts.push_back(read_file(f));
        bytes += texts.back().size();
      }
      size_t tokens = 0;
      const auto start = std::chrono::steady_clock::now();
      for (const auto& t : texts) tokens += tok.encode(t).size();
      const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
      std::cout << fmt::format("{{\"bytes\": {}, \"tokens\": {}, \"seconds\": {:.4f}, \"mb_per_s\": {:.3f}}}\n", bytes,
                               tokens, s, static_cast<double>(bytes) / 1e6 / s);
    } else if (!a->decode.empty()) {
      const auto rows = parse_id_rows(a->decode, "--decode");
      if (rows.size() != 1) throw ConfigError("--decode: give one row of ids (no ';')");
      std::vector<int32_t> ids;
      for (int64_t id : rows[0]) {
        if (id < INT32_MIN || id > INT32_MAX) throw ConfigError(fmt::format("--decode: id {} is out of range", id));
        ids.push_back(static_cast<int32_t>(id));
      }
      std::cout << tok.decode(ids);
    } else {
      const std::string text = a->file.empty() ? a->text : read_file(a->file);
      const auto ids = tok.encode(text);
      for (size_t i = 0; i < ids.size(); ++i) std::cout << (i ? "," : "") << ids[i];
      std::cout << "\n";
    }
    exit_code = kExitOk;
  });
}

}  // namespace latentmoe::cli
