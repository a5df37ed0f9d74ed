// The config loader (YAML and JSON, which yaml-cpp reads as YAML): an accepted file must
// validate without crashing, and dump -> load must give the same Config back.
#include "fuzz_common.h"
#include "latentmoe/config/loader.h"
#include "latentmoe/config/validate.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace latentmoe;
  config::Config cfg;
  try {
    cfg = config::load_config_text(std::string(fuzz::as_text(data, size)), "fuzz.yaml");
  } catch (const ConfigError&) {
    return 0;
  }
  (void)config::config_violations(cfg, 1);
  (void)config::config_violations(cfg, 4);
  const std::string dumped = config::dump_config_yaml(cfg);
  config::Config again;
  try {
    again = config::load_config_text(dumped, "dumped.yaml");
  } catch (const ConfigError& e) {
    fuzz::property_violated(std::string("the dump of an accepted config does not load: ") + e.what());
  }
  if (!(again == cfg)) fuzz::property_violated("dump -> load changed the config:\n" + dumped);
  return 0;
}
