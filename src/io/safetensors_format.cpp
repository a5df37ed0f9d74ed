// Torch-free safetensors header and index parsing (see safetensors_format.h).
#include "latentmoe/io/safetensors_format.h"

#include <fmt/format.h>
#include <fmt/ranges.h>

#include <algorithm>
#include <filesystem>
#include <limits>
#include <nlohmann/json.hpp>

namespace latentmoe::io {

using json = nlohmann::json;

namespace {
constexpr uint64_t kMaxHeaderBytes = 100ull << 20;

struct DtypeSize {
  const char* code;
  size_t bytes;
};
constexpr DtypeSize kDtypeSizes[] = {
    {"F64", 8}, {"F32", 4}, {"F16", 2}, {"BF16", 2}, {"I64", 8}, {"I32", 4}, {"I16", 2},
    {"I8", 1},  {"U8", 1},  {"BOOL", 1}, {"F8_E4M3", 1}, {"F8_E5M2", 1},
};

[[noreturn]] void fail(const std::string& path, const std::string& what) {
  throw SafetensorsError(fmt::format("{}: {}", path, what));
}
}  // namespace

const std::vector<std::string>& safetensors_dtype_codes() {
  static const std::vector<std::string> codes = [] {
    std::vector<std::string> out;
    for (const auto& d : kDtypeSizes) out.emplace_back(d.code);
    return out;
  }();
  return codes;
}

size_t safetensors_element_size(const std::string& dtype) {
  for (const auto& d : kDtypeSizes) {
    if (dtype == d.code) return d.bytes;
  }
  throw SafetensorsError(fmt::format("unknown dtype '{}' (supported: {})", dtype, fmt::join(safetensors_dtype_codes(), ", ")));
}

SafetensorsHeader parse_safetensors_header(const uint8_t* bytes, uint64_t file_size, const std::string& path) {
  if (file_size < 8) {
    fail(path, fmt::format("truncated: {} bytes, a safetensors file has at least an 8-byte header length", file_size));
  }
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
  SafetensorsHeader out;
  out.data_offset = 8 + header_len;
  const uint64_t buffer_size = file_size - out.data_offset;

  std::vector<std::pair<uint64_t, std::string>> spans;
  for (auto it = header.begin(); it != header.end(); ++it) {
    const std::string& name = it.key();
    if (name == "__metadata__") {
      if (!it->is_object()) fail(path, "__metadata__ must be an object of strings");
      for (auto m = it->begin(); m != it->end(); ++m) {
        if (!m->is_string()) fail(path, fmt::format("__metadata__ '{}' must be a string", m.key()));
        out.metadata[m.key()] = m->get<std::string>();
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
    size_t element_size = 0;
    try {
      element_size = safetensors_element_size(entry.dtype);
    } catch (const SafetensorsError& err) {
      bad(err.what());
    }
    if (!e["shape"].is_array()) bad("shape must be an array");
    // numel bounds the bytes; the product of the non-zero dimensions bounds the strides torch
    // computes even for an empty tensor ([0, 2^62, 2^62] would overflow them).
    uint64_t numel = 1, nonzero = 1;
    for (const auto& d : e["shape"]) {
      if (!d.is_number_unsigned()) bad(fmt::format("shape {} has a negative or non-integer dimension", e["shape"].dump()));
      const uint64_t dim = d.get<uint64_t>();
      if (dim != 0 && nonzero > (std::numeric_limits<uint64_t>::max() / 16) / dim) bad("shape is too large");
      if (dim != 0) nonzero *= dim;
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
    const uint64_t expected = numel * element_size;
    if (entry.end - entry.begin != expected) {
      bad(fmt::format("holds {} bytes but shape {} x {} needs {}", entry.end - entry.begin, e["shape"].dump(),
                      entry.dtype, expected));
    }
    spans.emplace_back(entry.begin, name);
    out.entries.emplace(name, std::move(entry));
  }
  // Sorted by start, a tensor overlaps an earlier one iff it starts before the furthest end so
  // far (empty tensors occupy nothing and are skipped, so they cannot hide an overlap).
  std::sort(spans.begin(), spans.end());
  const std::string* furthest = nullptr;
  for (const auto& [begin, name] : spans) {
    const TensorEntry& current = out.entries.at(name);
    if (current.end == current.begin) continue;
    if (furthest) {
      const TensorEntry& previous = out.entries.at(*furthest);
      if (current.begin < previous.end) {
        fail(path, fmt::format("tensors '{}' [{}, {}] and '{}' [{}, {}] overlap", *furthest, previous.begin,
                               previous.end, name, current.begin, current.end));
      }
    }
    if (!furthest || current.end > out.entries.at(*furthest).end) furthest = &name;
  }
  return out;
}

std::map<std::string, std::string> parse_safetensors_index(std::string_view text, const std::string& path) {
  json map;
  try {
    map = json::parse(text.begin(), text.end());
  } catch (const json::exception& e) {
    fail(path, fmt::format("invalid JSON: {}", e.what()));
  }
  if (!map.is_object() || !map.contains("weight_map") || !map["weight_map"].is_object()) {
    fail(path, "missing the 'weight_map' object");
  }
  std::map<std::string, std::string> shard_by_name;
  for (auto it = map["weight_map"].begin(); it != map["weight_map"].end(); ++it) {
    if (!it->is_string()) fail(path, fmt::format("weight_map['{}'] must be a file name", it.key()));
    const std::string shard = it->get<std::string>();
    const std::filesystem::path relative(shard);
    bool escapes = shard.empty() || relative.is_absolute() || shard.find('\0') != std::string::npos;
    for (const auto& part : relative) escapes = escapes || part == "..";
    if (escapes) {
      fail(path, fmt::format("shard path '{}' for '{}' leaves the checkpoint directory", shard, it.key()));
    }
    shard_by_name.emplace(it.key(), shard);
  }
  return shard_by_name;
}

}  // namespace latentmoe::io
