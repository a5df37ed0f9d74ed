// Event protobuf by hand: Event{1: wall_time double, 2: step int64, 3: file_version string,
// 5: summary}; Summary{1: repeated Value}; Value{1: tag string, 2: simple_value float}.
#include "latentmoe/train/metrics.h"

#include <fmt/format.h>
#include <unistd.h>

#include <chrono>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <stdexcept>

#include "latentmoe/util/hash.h"

namespace latentmoe::train {

namespace {
void varint(std::string& out, uint64_t v) {
  while (v >= 0x80) {
    out += static_cast<char>((v & 0x7F) | 0x80);
    v >>= 7;
  }
  out += static_cast<char>(v);
}

void length_delimited(std::string& out, int field, const std::string& bytes) {
  varint(out, static_cast<uint64_t>(field) << 3 | 2);
  varint(out, bytes.size());
  out += bytes;
}

template <class T>
void fixed(std::string& out, int field, int wire_type, T value) {
  varint(out, static_cast<uint64_t>(field) << 3 | static_cast<uint64_t>(wire_type));
  char bytes[sizeof(T)];
  std::memcpy(bytes, &value, sizeof(T));
  out.append(bytes, sizeof(T));
}

std::string event_header(double wall_time, int64_t step) {
  std::string e;
  fixed(e, 1, 1, wall_time);
  varint(e, 2 << 3 | 0);
  varint(e, static_cast<uint64_t>(step));
  return e;
}

double now_seconds() {
  return std::chrono::duration<double>(std::chrono::system_clock::now().time_since_epoch()).count();
}
}  // namespace

TensorBoardWriter::TensorBoardWriter(const std::string& dir) {
  std::filesystem::create_directories(dir);
  char host[256] = "localhost";
  gethostname(host, sizeof(host) - 1);
  path_ = fmt::format("{}/events.out.tfevents.{}.{}", dir, static_cast<int64_t>(now_seconds()), host);
  file_ = std::fopen(path_.c_str(), "wb");
  if (!file_) throw std::runtime_error(fmt::format("{}: cannot open for writing (logging.dir)", path_));
  std::string e = event_header(now_seconds(), 0);
  length_delimited(e, 3, "brain.Event:2");
  write_record(e);
}

TensorBoardWriter::~TensorBoardWriter() {
  if (file_) std::fclose(file_);
}

void TensorBoardWriter::write_record(const std::string& event) {
  std::string record;
  const uint64_t length = event.size();
  char header[8];
  std::memcpy(header, &length, 8);
  record.append(header, 8);
  const uint32_t length_crc = masked_crc32c(header, 8);
  record.append(reinterpret_cast<const char*>(&length_crc), 4);
  record += event;
  const uint32_t data_crc = masked_crc32c(event.data(), event.size());
  record.append(reinterpret_cast<const char*>(&data_crc), 4);
  std::fwrite(record.data(), 1, record.size(), file_);
}

void TensorBoardWriter::add_scalar(const std::string& tag, double value, int64_t step, double wall_time) {
  std::string v;
  length_delimited(v, 1, tag);
  fixed(v, 2, 5, static_cast<float>(value));
  std::string summary;
  length_delimited(summary, 1, v);
  std::string e = event_header(wall_time, step);
  length_delimited(e, 5, summary);
  write_record(e);
}

void TensorBoardWriter::flush() { std::fflush(file_); }

MetricsLogger::MetricsLogger(const std::string& dir, bool jsonl, bool tensorboard) : jsonl_(nullptr, &std::fclose) {
  if (!jsonl && !tensorboard) return;
  std::filesystem::create_directories(dir);
  if (jsonl) {
    jsonl_.reset(std::fopen((dir + "/metrics.jsonl").c_str(), "a"));
    if (!jsonl_) throw std::runtime_error(fmt::format("{}/metrics.jsonl: cannot open for writing (logging.dir)", dir));
  }
  if (tensorboard) tensorboard_ = std::make_unique<TensorBoardWriter>(dir);
}

void MetricsLogger::log(int64_t step, const std::map<std::string, double>& scalars) {
  const double wall = now_seconds();
  if (jsonl_) {
    std::string line = fmt::format("{{\"step\": {}, \"time\": {:.3f}", step, wall);
    for (const auto& [name, value] : scalars) {
      // Shortest round-trip formatting: the JSONL holds the exact double (bit-exact comparisons).
      line += std::isfinite(value) ? fmt::format(", \"{}\": {}", name, value) : fmt::format(", \"{}\": null", name);
    }
    line += "}\n";
    std::fputs(line.c_str(), jsonl_.get());
  }
  if (tensorboard_) {
    for (const auto& [name, value] : scalars) tensorboard_->add_scalar(name, value, step, wall);
  }
}

void MetricsLogger::flush() {
  if (jsonl_) std::fflush(jsonl_.get());
  if (tensorboard_) tensorboard_->flush();
}

}  // namespace latentmoe::train
