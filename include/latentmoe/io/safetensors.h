// safetensors reading (mmap, every offset and size checked before any tensor is touched) and
// writing (atomic: temporary file, fsync, rename). Errors name the file and the tensor.
#pragma once

#include <ATen/core/Tensor.h>

#include <map>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "latentmoe/io/safetensors_format.h"

namespace latentmoe::io {

class SafetensorsFile {
 public:
  // Maps the file and validates the whole header: size, JSON, dtypes, shapes, offsets in range,
  // sizes equal to shape x dtype, no overlaps. Throws SafetensorsError.
  explicit SafetensorsFile(const std::string& path);

  const std::string& path() const { return path_; }
  const std::map<std::string, TensorEntry>& entries() const { return entries_; }
  const std::map<std::string, std::string>& metadata() const { return metadata_; }
  bool contains(const std::string& name) const { return entries_.count(name) != 0; }
  // A CPU tensor viewing the mapped bytes (kept alive by the tensor), or a copy when the bytes
  // are not aligned for the dtype.
  at::Tensor tensor(const std::string& name) const;

 private:
  struct Mapping;
  std::string path_;
  std::shared_ptr<Mapping> mapping_;
  const uint8_t* data_ = nullptr;  // start of the data buffer
  std::map<std::string, TensorEntry> entries_;
  std::map<std::string, std::string> metadata_;
};

// Writes tensors (any device; copied to CPU, made contiguous) in the given order.
void save_safetensors(const std::string& path, const std::vector<std::pair<std::string, at::Tensor>>& tensors,
                      const std::map<std::string, std::string>& metadata = {});

// Every tensor of a checkpoint directory: `<stem>.safetensors`, or the shards named by
// `<stem>.safetensors.index.json` (each shard validated; every name must be where the index says,
// and shard paths must stay inside the directory, symbolic links resolved). Tensors view the mapped files (read lazily).
// Throws SafetensorsError.
std::map<std::string, at::Tensor> load_safetensors_dir(const std::string& dir, const std::string& stem = "model");

at::ScalarType scalar_type_from_safetensors(const std::string& dtype);
std::string safetensors_dtype(at::ScalarType type);

}  // namespace latentmoe::io
