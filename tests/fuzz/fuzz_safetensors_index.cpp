// model.safetensors.index.json: weight_map of tensor -> shard; no accepted shard path may leave
// the checkpoint directory.
#include <filesystem>

#include "fuzz_common.h"
#include "latentmoe/io/safetensors_format.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace latentmoe;
  try {
    for (const auto& [name, shard] : io::parse_safetensors_index(fuzz::as_text(data, size), "fuzz.index.json")) {
      const std::filesystem::path normal = (std::filesystem::path("/ckpt") / shard).lexically_normal();
      const auto relative = normal.lexically_relative("/ckpt");
      if (relative.empty() || *relative.begin() == "..") fuzz::property_violated("accepted escaping shard '" + shard + "'");
    }
  } catch (const io::SafetensorsError&) {
  }
  return 0;
}
