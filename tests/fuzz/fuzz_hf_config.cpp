// HF config.json import: accepted or rejected by key; an accepted model section must go through
// validation (and its parameter count) without crashing.
#include "fuzz_common.h"
#include "latentmoe/config/validate.h"
#include "latentmoe/io/hf_config.h"
#include "latentmoe/util/error.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace latentmoe;
  try {
    config::Config cfg;
    cfg.model = io::parse_hf_config(fuzz::as_text(data, size), "fuzz/config.json").model;
    (void)config::config_violations(cfg, 1);
  } catch (const ConfigError&) {
  }
  return 0;
}
