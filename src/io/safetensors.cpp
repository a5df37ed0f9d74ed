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

namespace latentmoe::io {

namespace fs = std::filesystem;
using json = nlohmann::json;

namespace {
constexpr uint64_t kMaxHeaderBytes = 100ull << 20;

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
  std::string allowed;
  for (const auto& d : kDtypes) allowed += std::string(allowed.empty() ? "" : ", ") + d.code;
  throw SafetensorsError(fmt::format("unknown dtype '{}' (supported: {})", dtype, allowed));
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

  uint64_t header_len = 0;
  for (int i = 7; i >= 0; --i) header_len = (header_len << 8) | bytes[i];  // little endian
  if (header_len > kMaxHeaderBytes) {
    fail(path, fmt::format("header length {} exceeds the {} byte limit (corrupt or not safetensors)", header_len, kMaxHeaderBytes));
  }
  if (8 + header_len > file_size) {
    fail(path, fmt::format("header length {} runs past the end of the file ({} bytes): truncated", header_len, file_size));
  }
  json header;
  try {
    header = json::parse(bytes + 8, bytes + 8 + header_len);
  } catch (const json::exception& e) {
    fail(path, fmt::format("header is not valid JSON: {}", e.what()));
  }
  if (!header.is_object()) fail(path, "header is not a JSON object");
  data_ = bytes + 8 + header_len;
  const uint64_t buffer_size = file_size - 8 - header_len;

  std::vector<std::pair<uint64_t, std::string>> spans;
  for (auto it = header.begin(); it != header.end(); ++it) {
    const std::string& name = it.key();
    if (name == "__metadata__") {
      if (!it->is_object()) fail(path, "__metadata__ must be an object of strings");
      for (auto m = it->begin(); m != it->end(); ++m) {
        if (!m->is_string()) fail(path, fmt::format("__metadata__ '{}' must be a string", m.key()));
        metadata_[m.key()] = m->get<std::string>();
      }
      continue;
    }
    const json& e = *it;
    const auto bad = [&](const std::string& what) { fail(path, fmt::format("tensor '{}': {}", name, what)); };
    if (!e.is_object() || !e.contains("dtype") || !e.contains("shape") || !e.contains("data_offsets")) {
      bad("entry needs dtype, shape and data_offsets");
    }
    if (!e["dtype"].is_string()) bad("dtype must be a string");
    TensorEntry entry;
    entry.dtype = e["dtype"].get<std::string>();
    at::ScalarType type{};
    try {
      type = scalar_type_from_safetensors(entry.dtype);
    } catch (const SafetensorsError& err) {
      bad(err.what());
    }
    if (!e["shape"].is_array()) bad("shape must be an array");
    uint64_t numel = 1;
    for (const auto& d : e["shape"]) {
      if (!d.is_number_unsigned()) bad(fmt::format("shape {} has a negative or non-integer dimension", e["shape"].dump()));
      const uint64_t dim = d.get<uint64_t>();
      if (dim != 0 && numel > (std::numeric_limits<uint64_t>::max() / 16) / dim) bad("shape is too large");
      numel *= dim;
      entry.shape.push_back(static_cast<int64_t>(dim));
    }
    const json& offsets = e["data_offsets"];
    if (!offsets.is_array() || offsets.size() != 2 || !offsets[0].is_number_unsigned() || !offsets[1].is_number_unsigned()) {
      bad("data_offsets must be two non-negative integers");
    }
    entry.begin = offsets[0].get<uint64_t>();
    entry.end = offsets[1].get<uint64_t>();
    if (entry.begin > entry.end) bad(fmt::format("data_offsets [{}, {}] are reversed", entry.begin, entry.end));
    if (entry.end > buffer_size) {
      bad(fmt::format("data_offsets [{}, {}] exceed the data buffer of {} bytes (file truncated?)", entry.begin,
                      entry.end, buffer_size));
    }
    const uint64_t expected = numel * c10::elementSize(type);
    if (entry.end - entry.begin != expected) {
      bad(fmt::format("holds {} bytes but shape {} x {} needs {}", entry.end - entry.begin, e["shape"].dump(),
                      entry.dtype, expected));
    }
    spans.emplace_back(entry.begin, name);
    entries_.emplace(name, std::move(entry));
  }
  std::sort(spans.begin(), spans.end());
  for (size_t i = 1; i < spans.size(); ++i) {
    const TensorEntry& previous = entries_.at(spans[i - 1].second);
    const TensorEntry& current = entries_.at(spans[i].second);
    if (current.begin < previous.end && current.end > current.begin) {
      fail(path, fmt::format("tensors '{}' [{}, {}] and '{}' [{}, {}] overlap", spans[i - 1].second, previous.begin,
                             previous.end, spans[i].second, current.begin, current.end));
    }
  }
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
  json map;
  try {
    std::ifstream in(index);
    map = json::parse(in);
  } catch (const json::exception& e) {
    throw SafetensorsError(fmt::format("{}: invalid JSON: {}", index.string(), e.what()));
  }
  if (!map.contains("weight_map") || !map["weight_map"].is_object()) {
    throw SafetensorsError(fmt::format("{}: missing the 'weight_map' object", index.string()));
  }
  std::map<std::string, std::vector<std::string>> names_by_shard;
  const fs::path canonical_root = fs::weakly_canonical(root);
  for (auto it = map["weight_map"].begin(); it != map["weight_map"].end(); ++it) {
    if (!it->is_string()) throw SafetensorsError(fmt::format("{}: weight_map['{}'] must be a file name", index.string(), it.key()));
    const std::string shard = it->get<std::string>();
    const fs::path resolved = fs::weakly_canonical(root / shard);
    const auto rel = resolved.lexically_relative(canonical_root);
    if (fs::path(shard).is_absolute() || rel.empty() || *rel.begin() == "..") {
      throw SafetensorsError(fmt::format("{}: shard path '{}' for '{}' leaves the checkpoint directory", index.string(),
                                         shard, it.key()));
    }
    names_by_shard[shard].push_back(it.key());
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
