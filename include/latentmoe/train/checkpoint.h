// Checkpoints in our own format (no pickle): one directory per step holding model.safetensors,
// optimizer.safetensors, trainer_state.json, config.yaml (so it is also a model directory for
// `generate`) and manifest.json (SHA-256 of each). Written into a temporary directory, fsynced,
// renamed, then the COMMITTED marker is written last: a directory without it is an interrupted
// save and is never loaded. keep_last prunes older committed checkpoints.
#pragma once

#include <ATen/core/Tensor.h>

#include <map>
#include <optional>
#include <stdexcept>
#include <string>
#include <vector>

namespace latentmoe::train {

class CheckpointError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

struct CheckpointData {
  std::map<std::string, at::Tensor> model;
  std::map<std::string, at::Tensor> optimizer;
  std::string trainer_state_json;
  std::string config_yaml;
};

class Checkpointer {
 public:
  Checkpointer(std::string dir, int64_t keep_last);
  // Returns the committed checkpoint's directory.
  std::string save(int64_t step, const CheckpointData& data);
  // Newest committed checkpoint whose manifest verifies; every newer one that was passed over is
  // appended to `skipped` with the reason.
  std::optional<std::string> latest(std::vector<std::string>* skipped = nullptr) const;
  // Verifies the marker and every file's SHA-256 (CheckpointError naming the file), then loads.
  static CheckpointData load(const std::string& checkpoint_dir);
  static void verify(const std::string& checkpoint_dir);
  static std::string step_dir_name(int64_t step);

 private:
  void prune() const;
  std::string dir_;
  int64_t keep_last_;
};

}  // namespace latentmoe::train
