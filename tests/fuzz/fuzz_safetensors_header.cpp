// safetensors header: length prefix, JSON, dtypes, shapes, offsets. Every accepted entry must lie
// inside the data buffer with exactly shape x dtype bytes.
#include "fuzz_common.h"
#include "latentmoe/io/safetensors_format.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace latentmoe;
  try {
    const io::SafetensorsHeader header = io::parse_safetensors_header(data, size, "fuzz.safetensors");
    const uint64_t buffer = size - header.data_offset;
    for (const auto& [name, e] : header.entries) {
      uint64_t numel = 1;
      for (int64_t d : e.shape) numel *= static_cast<uint64_t>(d);
      if (e.end > buffer || e.begin > e.end || e.end - e.begin != numel * io::safetensors_element_size(e.dtype)) {
        fuzz::property_violated("accepted tensor '" + name + "' does not fit the buffer");
      }
    }
  } catch (const io::SafetensorsError&) {
  }
  return 0;
}
