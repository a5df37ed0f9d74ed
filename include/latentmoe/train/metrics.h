// Metric sinks: metrics.jsonl (one JSON object per step) and TensorBoard event files written
// by hand (TFRecord framing with masked CRC32C, Event/Summary protobufs encoded directly).
// No torch headers.
#pragma once

#include <cstdint>
#include <cstdio>
#include <map>
#include <memory>
#include <string>

namespace latentmoe::train {

class TensorBoardWriter {
 public:
  // Creates dir/events.out.tfevents.<time>.<host> and writes the file_version event.
  explicit TensorBoardWriter(const std::string& dir);
  ~TensorBoardWriter();
  void add_scalar(const std::string& tag, double value, int64_t step, double wall_time);
  void flush();
  const std::string& path() const { return path_; }

 private:
  void write_record(const std::string& event);
  std::string path_;
  std::FILE* file_ = nullptr;
};

class MetricsLogger {
 public:
  MetricsLogger(const std::string& dir, bool jsonl, bool tensorboard);
  // One step's scalars (name → value); written to every enabled sink.
  void log(int64_t step, const std::map<std::string, double>& scalars);
  void flush();

 private:
  std::unique_ptr<std::FILE, int (*)(std::FILE*)> jsonl_;
  std::unique_ptr<TensorBoardWriter> tensorboard_;
};

}  // namespace latentmoe::train
