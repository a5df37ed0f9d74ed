// The safetensors container format without torch: the header (8-byte little-endian length N, N
// bytes of JSON {name: {dtype, shape, data_offsets}}, optional __metadata__) and the sharded
// index (`<stem>.safetensors.index.json`). Parsers trust nothing in the bytes they are given;
// they are what the fuzz targets exercise.
#pragma once

#include <cstdint>
#include <map>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

namespace latentmoe::io {

// A malformed or unreadable safetensors file (or index). what() names the file and tensor.
class SafetensorsError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

struct TensorEntry {
  std::string dtype;  // safetensors code: F32, BF16, F16, F8_E4M3, ...
  std::vector<int64_t> shape;
  uint64_t begin = 0;  // byte offsets relative to the data buffer
  uint64_t end = 0;
};

struct SafetensorsHeader {
  std::map<std::string, TensorEntry> entries;
  std::map<std::string, std::string> metadata;
  uint64_t data_offset = 0;  // where the data buffer starts in the file (8 + header length)
};

// Bytes per element of a safetensors dtype code; throws SafetensorsError listing the supported
// codes for an unknown one.
size_t safetensors_element_size(const std::string& dtype);
const std::vector<std::string>& safetensors_dtype_codes();

// Validates the whole header of a file of `size` bytes starting at `bytes`: header length, JSON,
// dtypes, shapes, offsets inside the data buffer, sizes equal to shape x dtype, no overlaps.
SafetensorsHeader parse_safetensors_header(const uint8_t* bytes, uint64_t size, const std::string& path);

// The index's weight_map: tensor name -> shard file name. Shard names must be plain relative
// paths inside the checkpoint directory (no absolute path, no "..", no empty name).
std::map<std::string, std::string> parse_safetensors_index(std::string_view text, const std::string& path);

}  // namespace latentmoe::io
