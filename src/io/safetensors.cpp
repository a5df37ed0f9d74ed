// safetensors: 8-byte LE header length N, N bytes of JSON {name: {dtype, shape, data_offsets}},
// then the data buffer. Reader trusts nothing in the file.
#include "latentmoe/io/safetensors.h"

#include <ATen/ATen.h>
#include <fcntl.h>
#include <fmt/format.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "latentmoe/util/atomic_file.h"

namespace latentmoe::io {

namespace fs = std::filesystem;
using json = nlohmann::json;

namespace {
struct DtypeInfo {
  const char* code;
  at::ScalarType type;
};
constexpr DtypeInfo kDtypes[] = {
    {"F64", at::kDouble}, {"F32", at::kFloat},   {"F16", at::kHalf},  {"BF16", at::kBFloat16},
    {"I64", at::kLong},   {"I32", at::kInt},     {"I16", at::kShort}, {"I8", at::kChar},
    {"U8", at::kByte},    {"BOOL", at::kBool},   {"F8_E4M3", at::kFloat8_e4m3fn}, {"F8_E5M2", at::kFloat8_e5m2},
};

[[noreturn]] void fail(const std::string& path, const std::string& what) {
  throw SafetensorsError(fmt::format("{}: {}", path, what));
}
}  // namespace

at::ScalarType scalar_type_from_safetensors(const std::string& dtype) {
  for (const auto& d : kDtypes) {
    if (dtype == d.code) return d.type;
  }
  safetensors_element_size(dtype);  // throws the one "unknown dtype (supported: ...)" message
  throw std::logic_error("safetensors dtype " + dtype + " has a size but no torch type (safetensors.cpp kDtypes)");
}

std::string safetensors_dtype(at::ScalarType type) {
  for (const auto& d : kDtypes) {
    if (type == d.type) return d.code;
  }
  throw SafetensorsError(fmt::format("cannot store dtype {} in safetensors", c10::toString(type)));
}

struct SafetensorsFile::Mapping {
  void* address = MAP_FAILED;
  size_t size = 0;
  ~Mapping() {
    if (address != MAP_FAILED && size > 0) munmap(address, size);
  }
};

SafetensorsFile::SafetensorsFile(const std::string& path) : path_(path), mapping_(std::make_shared<Mapping>()) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) fail(path, fmt::format("cannot open: {}", std::strerror(errno)));
  struct stat st {};
  if (fstat(fd, &st) != 0) {
    ::close(fd);
    fail(path, "cannot stat");
  }
  const uint64_t file_size = static_cast<uint64_t>(st.st_size);
  if (file_size < 8) {
    ::close(fd);
    fail(path, fmt::format("truncated: {} bytes, a safetensors file has at least an 8-byte header length", file_size));
  }
  mapping_->size = file_size;
  mapping_->address = mmap(nullptr, file_size, PROT_READ, MAP_PRIVATE, fd, 0);
  ::close(fd);
  if (mapping_->address == MAP_FAILED) fail(path, fmt::format("mmap failed: {}", std::strerror(errno)));
  const auto* bytes = static_cast<const uint8_t*>(mapping_->address);
  SafetensorsHeader header = parse_safetensors_header(bytes, file_size, path);
  data_ = bytes + header.data_offset;
  entries_ = std::move(header.entries);
  metadata_ = std::move(header.metadata);
}

at::Tensor SafetensorsFile::tensor(const std::string& name) const {
  const auto it = entries_.find(name);
  if (it == entries_.end()) fail(path_, fmt::format("no tensor named '{}'", name));
  const TensorEntry& e = it->second;
  const at::ScalarType type = scalar_type_from_safetensors(e.dtype);
  const uint8_t* start = data_ + e.begin;
  const auto options = at::TensorOptions(type);
  if (reinterpret_cast<uintptr_t>(start) % c10::elementSize(type) != 0 || e.begin == e.end) {
    at::Tensor copy = at::empty(e.shape, options);
    if (e.end > e.begin) std::memcpy(copy.data_ptr(), start, e.end - e.begin);
    return copy;
  }
  std::shared_ptr<Mapping> keep_alive = mapping_;
  return at::from_blob(const_cast<uint8_t*>(start), e.shape, [keep_alive](void*) {}, options);
}

void save_safetensors(const std::string& path, const std::vector<std::pair<std::string, at::Tensor>>& tensors,
                      const std::map<std::string, std::string>& metadata) {
  json header = json::object();
  if (!metadata.empty()) header["__metadata__"] = metadata;
  std::vector<at::Tensor> contiguous;
  uint64_t offset = 0;
  for (const auto& [name, t] : tensors) {
    if (header.contains(name)) throw SafetensorsError(fmt::format("{}: duplicate tensor name '{}'", path, name));
    at::Tensor c = t.detach().to(at::kCPU).contiguous();
    const uint64_t bytes = static_cast<uint64_t>(c.numel()) * c.element_size();
    header[name] = {{"dtype", safetensors_dtype(c.scalar_type())}, {"shape", c.sizes().vec()}, {"data_offsets", {offset, offset + bytes}}};
    offset += bytes;
    contiguous.push_back(std::move(c));
  }
  std::string text = header.dump();
  text.append((8 - text.size() % 8) % 8, ' ');  // keep the data buffer 8-byte aligned
  const std::string tmp = path + ".tmp";
  {
    std::ofstream out(tmp, std::ios::binary | std::ios::trunc);
    if (!out) throw SafetensorsError(fmt::format("{}: cannot open for writing", tmp));
    uint8_t length[8];
    uint64_t n = text.size();
    for (uint8_t& b : length) {
      b = static_cast<uint8_t>(n & 0xff);
      n >>= 8;
    }
    out.write(reinterpret_cast<const char*>(length), 8);
    out.write(text.data(), static_cast<std::streamsize>(text.size()));
    for (const auto& c : contiguous) {
      out.write(static_cast<const char*>(c.data_ptr()), static_cast<std::streamsize>(c.numel() * c.element_size()));
    }
    out.flush();
    if (!out) throw SafetensorsError(fmt::format("{}: write failed (disk full?)", tmp));
  }
  const int fd = ::open(tmp.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd >= 0) {
    ::fsync(fd);
    ::close(fd);
  }
  fs::rename(tmp, path);
}

std::map<std::string, at::Tensor> load_safetensors_dir(const std::string& dir, const std::string& stem) {
  const fs::path root(dir);
  const fs::path index = root / (stem + ".safetensors.index.json");
  std::map<std::string, at::Tensor> out;
  if (!fs::exists(index)) {
    const fs::path single = root / (stem + ".safetensors");
    if (!fs::exists(single)) {
      throw SafetensorsError(fmt::format("{}: neither {}.safetensors nor {}.safetensors.index.json exists", dir, stem, stem));
    }
    const SafetensorsFile file(single.string());
    for (const auto& [name, entry] : file.entries()) out.emplace(name, file.tensor(name));
    return out;
  }
  const std::optional<std::string> text = read_text_file(index.string());
  if (!text) throw SafetensorsError(fmt::format("{}: cannot open", index.string()));
  std::map<std::string, std::vector<std::string>> names_by_shard;
  const fs::path canonical_root = fs::weakly_canonical(root);
  for (const auto& [name, shard] : parse_safetensors_index(*text, index.string())) {
    const auto rel = fs::weakly_canonical(root / shard).lexically_relative(canonical_root);
    if (rel.empty() || *rel.begin() == "..") {
      throw SafetensorsError(fmt::format("{}: shard path '{}' for '{}' leaves the checkpoint directory", index.string(),
                                         shard, name));
    }
    names_by_shard[shard].push_back(name);
  }
  for (const auto& [shard, names] : names_by_shard) {
    const SafetensorsFile file((root / shard).string());
    for (const auto& name : names) {
      if (!file.contains(name)) {
        throw SafetensorsError(fmt::format("{}: the index puts tensor '{}' here, but the file does not hold it",
                                           file.path(), name));
      }
      out.emplace(name, file.tensor(name));
    }
  }
  return out;
}

}  // namespace latentmoe::io
