// Checkpoints in our own format (no pickle): one directory per step holding the model and
// optimizer tensors, trainer_state.json, config.yaml (so it is also a model directory for
// `generate`) and manifest.json (SHA-256 of every file). One process writes model.safetensors and
// optimizer.safetensors; several ranks each write their shard (model-0000r-of-0000W.safetensors,
// likewise optimizer-*) plus an HF-style <stem>.safetensors.index.json mapping every tensor to its
// shard. Tensors are stored whole under global names, so any world size or EP degree can read
// what it needs (resharding is a matter of picking names). Written into a temporary directory,
// fsynced, renamed, then the COMMITTED marker is written last, only after every rank's shard is
// on disk: a directory without it is an interrupted save and is never loaded. keep_last prunes
// older committed checkpoints.
#pragma once

#include <ATen/core/Tensor.h>

#include <map>
#include <optional>
#include <stdexcept>
#include <string>
#include <vector>

namespace latentmoe::parallel {
class Communicator;
}

namespace latentmoe::train {

class CheckpointError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// What one rank writes: the tensors assigned to it (every rank's lists are disjoint).
struct CheckpointShard {
  std::vector<std::pair<std::string, at::Tensor>> model, optimizer;
  std::vector<std::string> held;  // names of every model tensor this rank holds (checked to be written by some rank)
};

// Loaded tensors view the mapped files (read on first touch).
struct CheckpointData {
  std::map<std::string, at::Tensor> model;
  std::map<std::string, at::Tensor> optimizer;
  std::string trainer_state_json;
  std::string config_yaml;
};

class Checkpointer {
 public:
  Checkpointer(std::string dir, int64_t keep_last);
  // Returns the committed checkpoint's directory. Single process.
  std::string save(int64_t step, const CheckpointData& data);
  // Collective over `comm` (null = single process): every rank writes its shard; rank 0 writes
  // the shared files and commits once all shards are on disk; all ranks return after the commit.
  std::string save(int64_t step, const CheckpointShard& shard, const std::string& trainer_state_json,
                   const std::string& config_yaml, parallel::Communicator* comm);
  // Newest committed checkpoint whose manifest verifies; every newer one that was passed over is
  // appended to `skipped` with the reason.
  std::optional<std::string> latest(std::vector<std::string>* skipped = nullptr) const;
  // Verifies the marker and every file's SHA-256 (CheckpointError naming the file), then loads.
  static CheckpointData load(const std::string& checkpoint_dir);
  static void verify(const std::string& checkpoint_dir);
  static std::string step_dir_name(int64_t step);

 private:
  void prune() const;
  std::string save_into_tmp_then_commit(int64_t step, const CheckpointShard& shard, const std::string& trainer_state_json,
                                        const std::string& config_yaml, parallel::Communicator* comm);
  std::string dir_;
  int64_t keep_last_;
};

// Model directories outside training (`init`, `convert --from-hf`) carry a manifest.json too:
// the SHA-256 of each listed file (no COMMITTED marker: they are not training checkpoints).
void write_model_manifest(const std::string& model_dir, const std::vector<std::string>& files);
// What every reader of a model directory calls first: a committed checkpoint is verified as
// Checkpointer::verify does; otherwise its manifest.json must exist and match (CheckpointError
// naming the file, and --no-verify as the way to read a hand-made directory).
void verify_model_dir(const std::string& dir);

}  // namespace latentmoe::train
