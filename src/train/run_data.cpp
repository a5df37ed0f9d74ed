// Where a run's data and tokenizer come from: data.paths, or the bundled corpus (Debian's
// python3.11-doc sources) prepared on first use; data.tokenizer, or the bundled BPE. And the
// trainer's loaders over them: FIM on the training split, background batch preparation.
#include <filesystem>
#include <thread>

#include <fmt/format.h>

#include "latentmoe/data/prepare.h"
#include "latentmoe/train/trainer.h"
#include "latentmoe/util/directory_lock.h"
#include "latentmoe/util/error.h"
#include "latentmoe/util/log.h"

namespace latentmoe::train {

namespace fs = std::filesystem;

std::string resolve_tokenizer_path(const config::Config& cfg) {
  return cfg.data.tokenizer.empty() ? std::string(LATENTMOE_SOURCE_DIR "/data/tokenizer/python-docs-bpe-8k.json")
                                    : cfg.data.tokenizer;
}

std::vector<std::string> resolve_data_paths(const config::Config& cfg) {
  if (!cfg.data.paths.empty()) return cfg.data.paths;
  const char* dir = std::getenv("LATENTMOE_DATA_DIR");
  const std::string prefix = std::string(dir && *dir ? dir : LATENTMOE_DEFAULT_DATA_DIR) + "/python-docs";
  if (fs::exists(prefix + ".idx")) return {prefix};
  // Several processes can start at once on a fresh machine (the ranks of a job, tests run in
  // parallel): one prepares the corpus, the others wait for it instead of racing on its files.
  const DirectoryLock preparing(fs::path(prefix).parent_path().string(), "LATENTMOE_DATA_DIR (the default corpus)",
                                DirectoryLock::Wait::yes);
  if (!fs::exists(prefix + ".idx")) {
    LMOE_INFO("preparing the default corpus (Debian python3.11-doc sources) into {}", prefix);
    data::PrepareOptions options;
    options.tokenizer = resolve_tokenizer_path(cfg);
    options.inputs = {"/usr/share/doc/python3.11/html/_sources"};
    options.output_prefix = prefix;
    options.workers = std::max(1u, std::thread::hardware_concurrency());
    data::prepare_data(options);
  }
  return {prefix};
}

void Trainer::setup_data() {
  const auto& t = cfg_.train;
  data_paths_ = resolve_data_paths(cfg_);
  data::LoaderOptions options{.seq_len = t.seq_len, .seed = static_cast<uint64_t>(cfg_.seed),
                              .valid_fraction = cfg_.data.valid_fraction, .split = data::Split::train,
                              .weights = cfg_.data.weights, .vocab_size = cfg_.model.vocab_size, .fim = nullptr};
  if (cfg_.data.fim_rate > 0) {  // training samples only: validation measures the plain next-token loss
    auto tokenizer = std::make_shared<const data::Tokenizer>(data::Tokenizer::from_file(resolve_tokenizer_path(cfg_)));
    options.fim = std::make_shared<const data::FimTransform>(tokenizer, cfg_.data.fim_rate, cfg_.data.fim_spm_rate,
                                                              static_cast<uint64_t>(cfg_.seed));
    const data::FimTokens& fim = options.fim->tokens();
    for (const int32_t id : {fim.prefix, fim.suffix, fim.middle, fim.pad}) {
      if (id >= cfg_.model.vocab_size) {
        throw ConfigError(fmt::format("data.fim_rate: the FIM token id {} of {} is >= model.vocab_size {}; raise "
                                      "model.vocab_size", id, tokenizer->path(), cfg_.model.vocab_size));
      }
    }
    ignored_label_ = fim.pad;
  }
  train_data_ = std::make_unique<data::DataLoader>(data_paths_, options);
  if (cfg_.data.num_workers > 0) prefetcher_ = std::make_unique<data::BatchPrefetcher>(*train_data_, cfg_.data.num_workers);
  options.fim.reset();
  if (cfg_.data.valid_fraction > 0 && t.eval_batches > 0) {
    options.split = data::Split::valid;
    valid_data_ = std::make_unique<data::DataLoader>(data_paths_, options);
  }
}

int64_t Trainer::accum_steps(int64_t global_batch) const {
  const auto& t = cfg_.train;
  return t.grad_accum_steps > 0 ? t.grad_accum_steps : global_batch / (t.micro_batch_size * world_);
}

std::vector<data::BatchPrefetcher::Request> Trainer::step_requests(int64_t consumed, int64_t global_batch) const {
  const auto& t = cfg_.train;
  std::vector<data::BatchPrefetcher::Request> out;
  for (int64_t micro = 0; micro < accum_steps(global_batch); ++micro) {
    // This rank's slice of the global batch, then its micro-batch (world 1: the whole batch).
    out.push_back({consumed + rank_ * (global_batch / world_) + micro * t.micro_batch_size, t.micro_batch_size});
  }
  return out;
}

}  // namespace latentmoe::train
