// Where a run's data and tokenizer come from: data.paths, or the bundled corpus (Debian's
// python3.11-doc sources) prepared on first use; data.tokenizer, or the bundled BPE.
#include <filesystem>
#include <thread>

#include "latentmoe/data/prepare.h"
#include "latentmoe/train/trainer.h"
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

}  // namespace latentmoe::train
