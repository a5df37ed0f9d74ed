// Atomic, verified checkpoint directories.
#include "latentmoe/train/checkpoint.h"

#include <fcntl.h>
#include <fmt/format.h>
#include <unistd.h>

#include <algorithm>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "latentmoe/io/safetensors.h"
#include "latentmoe/parallel/communicator.h"
#include "latentmoe/util/atomic_file.h"
#include "latentmoe/util/hash.h"

namespace latentmoe::train {

namespace fs = std::filesystem;
using json = nlohmann::json;

namespace {
constexpr const char* kMarker = "COMMITTED";
constexpr const char* kRequired[] = {"trainer_state.json", "config.yaml"};

void fsync_path(const fs::path& path) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd >= 0) {
    ::fsync(fd);
    ::close(fd);
  }
}

void write_text(const fs::path& path, const std::string& text) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out << text;
  out.flush();
  if (!out) throw CheckpointError(fmt::format("{}: write failed (disk full?)", path.string()));
}

std::string read_text(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw CheckpointError(fmt::format("{}: missing or unreadable", path.string()));
  std::stringstream s;
  s << in.rdbuf();
  return s.str();
}

std::vector<std::pair<std::string, at::Tensor>> as_list(const std::map<std::string, at::Tensor>& m) {
  return {m.begin(), m.end()};
}

int64_t step_of(const std::string& name) {
  if (name.rfind("step-", 0) != 0 || name.size() != 13) return -1;
  for (size_t i = 5; i < name.size(); ++i) {
    if (name[i] < '0' || name[i] > '9') return -1;
  }
  return std::stoll(name.substr(5));
}

// Checkpoint directories by step, newest first (committed or not).
std::vector<std::pair<int64_t, fs::path>> step_dirs(const std::string& dir) {
  std::vector<std::pair<int64_t, fs::path>> out;
  std::error_code ec;
  for (const auto& e : fs::directory_iterator(dir, ec)) {
    const int64_t step = step_of(e.path().filename().string());
    if (e.is_directory() && step >= 0) out.emplace_back(step, e.path());
  }
  std::sort(out.begin(), out.end(), [](const auto& a, const auto& b) { return a.first > b.first; });
  return out;
}
}  // namespace

std::string Checkpointer::step_dir_name(int64_t step) { return fmt::format("step-{:08d}", step); }

Checkpointer::Checkpointer(std::string dir, int64_t keep_last) : dir_(std::move(dir)), keep_last_(keep_last) {}

std::string Checkpointer::save(int64_t step, const CheckpointData& data) {
  return save(step, CheckpointShard{as_list(data.model), as_list(data.optimizer), {}}, data.trainer_state_json,
              data.config_yaml, nullptr);
}

std::string Checkpointer::save(int64_t step, const CheckpointShard& shard, const std::string& trainer_state_json,
                               const std::string& config_yaml, parallel::Communicator* comm) {
  try {
    return save_into_tmp_then_commit(step, shard, trainer_state_json, config_yaml, comm);
  } catch (...) {
    // A failed save (disk full, permissions) leaves nothing behind; older checkpoints are untouched.
    if (!comm || comm->rank() == 0) {
      std::error_code ec;
      fs::remove_all(fs::path(dir_) / fmt::format(".{}.tmp", step_dir_name(step)), ec);
    }
    throw;
  }
}

std::string Checkpointer::save_into_tmp_then_commit(int64_t step, const CheckpointShard& shard,
                                                    const std::string& trainer_state_json, const std::string& config_yaml,
                                                    parallel::Communicator* comm) {
  const int rank = comm ? comm->rank() : 0, world = comm ? comm->world_size() : 1;
  const fs::path final_dir = fs::path(dir_) / step_dir_name(step);
  const fs::path tmp = fs::path(dir_) / fmt::format(".{}.tmp", step_dir_name(step));
  if (rank == 0) {
    fs::remove_all(tmp);  // an interrupted earlier save of this step
    fs::create_directories(tmp);
  }
  if (comm) comm->barrier("checkpoint directory barrier");
  // 1. Every rank writes its shard and records the files' hashes and the tensor names.
  const auto shard_name = [&](const std::string& stem) {
    return world == 1 ? stem + ".safetensors" : fmt::format("{}-{:05d}-of-{:05d}.safetensors", stem, rank + 1, world);
  };
  json mine = {{"files", json::object()}, {"model", json::array()}, {"optimizer", json::array()}, {"held", shard.held}};
  for (const auto& [stem, tensors] : {std::pair<std::string, const std::vector<std::pair<std::string, at::Tensor>>*>{
                                          "model", &shard.model},
                                      {"optimizer", &shard.optimizer}}) {
    if (tensors->empty() && world > 1) continue;
    const std::string file = shard_name(stem);
    io::save_safetensors((tmp / file).string(), *tensors, {{"format", "latentmoe"}});
    fsync_path(tmp / file);
    mine["files"][file] = sha256_file_hex((tmp / file).string());
    for (const auto& [name, t] : *tensors) mine[stem].push_back({name, file});
  }
  write_text(tmp / fmt::format(".shard-{}.json", rank), mine.dump());
  fsync_path(tmp / fmt::format(".shard-{}.json", rank));
  if (comm) comm->barrier("checkpoint shard barrier (waiting for every rank's files)");
  // 2. Rank 0 writes the shared files, the indexes and the manifest, renames, and commits.
  if (rank == 0) {
    json manifest = {{"step", step}, {"world_size", world}, {"files", json::object()}};
    json index[2] = {{{"metadata", {{"format", "latentmoe"}}}, {"weight_map", json::object()}},
                     {{"metadata", {{"format", "latentmoe"}}}, {"weight_map", json::object()}}};
    std::vector<std::string> held;
    for (int r = 0; r < world; ++r) {
      const fs::path part = tmp / fmt::format(".shard-{}.json", r);
      const json theirs = json::parse(read_text(part));
      for (const auto& [file, hash] : theirs["files"].items()) manifest["files"][file] = hash;
      for (int k = 0; k < 2; ++k) {
        for (const auto& entry : theirs[k == 0 ? "model" : "optimizer"]) {
          const std::string name = entry[0].get<std::string>();
          if (index[k]["weight_map"].contains(name)) {  // never commit an ambiguous checkpoint
            throw CheckpointError(fmt::format("checkpoint step {}: tensor '{}' was written by two ranks (second: rank {})",
                                              step, name, r));
          }
          index[k]["weight_map"][name] = entry[1];
        }
      }
      for (const auto& name : theirs["held"]) held.push_back(name.get<std::string>());
      fs::remove(part);
    }
    for (const auto& name : held) {  // every tensor some rank holds is in the checkpoint
      if (world > 1 && !index[0]["weight_map"].contains(name)) {
        throw CheckpointError(fmt::format("checkpoint step {}: no rank wrote model tensor '{}'", step, name));
      }
    }
    std::vector<std::pair<std::string, std::string>> shared = {{"trainer_state.json", trainer_state_json},
                                                               {"config.yaml", config_yaml}};
    if (world > 1) {
      shared.emplace_back("model.safetensors.index.json", index[0].dump(2));
      shared.emplace_back("optimizer.safetensors.index.json", index[1].dump(2));
    }
    for (const auto& [file, text] : shared) {
      write_text(tmp / file, text);
      fsync_path(tmp / file);
      manifest["files"][file] = sha256_file_hex((tmp / file).string());
    }
    write_text(tmp / "manifest.json", manifest.dump(2));
    fsync_path(tmp / "manifest.json");
    fsync_path(tmp);
    if (fs::exists(final_dir)) fs::remove_all(final_dir);  // an uncommitted leftover of this step
    fs::rename(tmp, final_dir);
    fsync_path(dir_);
    if (const char* hook = std::getenv("LATENTMOE_TEST_CRASH_BEFORE_COMMIT"); hook && std::string(hook) == "1") {
      std::_Exit(86);  // test hook: die between the rename and the commit marker
    }
    write_text(final_dir / kMarker, sha256_file_hex((final_dir / "manifest.json").string()) + "\n");
    fsync_path(final_dir / kMarker);
    fsync_path(final_dir);
    prune();
  }
  if (comm) comm->barrier("checkpoint commit barrier");
  return final_dir.string();
}

void Checkpointer::prune() const {
  // Temporary directories of interrupted saves (the current save has been renamed already).
  std::error_code ec;
  for (const auto& e : fs::directory_iterator(dir_, ec)) {
    const std::string name = e.path().filename().string();
    if (e.is_directory() && name.rfind(".step-", 0) == 0 && name.find(".tmp") != std::string::npos) {
      fs::remove_all(e.path(), ec);
    }
  }
  int64_t kept = 0;
  for (const auto& [step, path] : step_dirs(dir_)) {
    if (!fs::exists(path / kMarker)) continue;
    if (++kept > keep_last_) fs::remove_all(path);
  }
}

namespace {
// Every file the manifest lists exists and has its SHA-256.
void verify_manifest_files(const std::string& dir_text, const json& manifest) {
  const fs::path dir(dir_text);
  for (const auto& [f, expected] : manifest["files"].items()) {
    const fs::path path = dir / f;
    if (fs::path(f).has_parent_path() || !expected.is_string()) {
      throw CheckpointError(fmt::format("{}/manifest.json: bad entry '{}'", dir_text, f));
    }
    if (!fs::exists(path)) throw CheckpointError(fmt::format("{}/{}: missing", dir_text, f));
    const std::string actual = sha256_file_hex(path.string());
    if (actual != expected.get<std::string>()) {
      throw CheckpointError(fmt::format("{}/{}: SHA-256 mismatch (expected {}, got {}): the file is corrupt", dir_text, f,
                                        expected.get<std::string>(), actual));
    }
  }
}
}  // namespace

void Checkpointer::verify(const std::string& checkpoint_dir) {
  const fs::path dir(checkpoint_dir);
  if (!fs::is_directory(dir)) throw CheckpointError(fmt::format("{}: no such checkpoint directory", checkpoint_dir));
  if (!fs::exists(dir / kMarker)) {
    throw CheckpointError(fmt::format("{}: no {} marker (the save was interrupted)", checkpoint_dir, kMarker));
  }
  const std::string manifest_text = read_text(dir / "manifest.json");
  std::string marker = read_text(dir / kMarker);
  marker.erase(marker.find_last_not_of(" \n\r") + 1);
  if (marker != sha256_hex(manifest_text.data(), manifest_text.size())) {
    throw CheckpointError(fmt::format("{}: manifest.json does not match its {} marker (SHA-256 mismatch)", checkpoint_dir, kMarker));
  }
  json manifest;
  try {
    manifest = json::parse(manifest_text);
  } catch (const json::exception& e) {
    throw CheckpointError(fmt::format("{}/manifest.json: invalid JSON: {}", checkpoint_dir, e.what()));
  }
  if (!manifest.contains("files") || !manifest["files"].is_object()) {
    throw CheckpointError(fmt::format("{}/manifest.json: no 'files' object", checkpoint_dir));
  }
  for (const char* f : kRequired) {
    if (!manifest["files"].contains(f)) throw CheckpointError(fmt::format("{}/manifest.json: no entry for {}", checkpoint_dir, f));
  }
  for (const char* stem : {"model", "optimizer"}) {
    if (!manifest["files"].contains(std::string(stem) + ".safetensors") &&
        !manifest["files"].contains(std::string(stem) + ".safetensors.index.json")) {
      throw CheckpointError(fmt::format("{}/manifest.json: lists neither {}.safetensors nor {}.safetensors.index.json",
                                        checkpoint_dir, stem, stem));
    }
  }
  verify_manifest_files(checkpoint_dir, manifest);
}

void write_model_manifest(const std::string& model_dir, const std::vector<std::string>& files) {
  json manifest = {{"format", "latentmoe-model"}, {"files", json::object()}};
  for (const std::string& f : files) manifest["files"][f] = sha256_file_hex((fs::path(model_dir) / f).string());
  write_text_file_atomically((fs::path(model_dir) / "manifest.json").string(), manifest.dump(2));
}

void verify_model_dir(const std::string& dir) {
  if (fs::exists(fs::path(dir) / kMarker)) return Checkpointer::verify(dir);
  if (!fs::exists(fs::path(dir) / "config.yaml")) return;  // not a model directory at all: the loader says so
  const fs::path manifest_path = fs::path(dir) / "manifest.json";
  if (!fs::exists(manifest_path)) {
    throw CheckpointError(fmt::format("{}: no manifest.json, so its weights cannot be verified (training checkpoints, "
                                      "`latentmoe init` and `convert --from-hf` all write one); for a directory made by "
                                      "hand, pass --no-verify to read it unverified", dir));
  }
  json manifest;
  try {
    manifest = json::parse(read_text(manifest_path));
  } catch (const json::exception& e) {
    throw CheckpointError(fmt::format("{}/manifest.json: invalid JSON: {}", dir, e.what()));
  }
  if (!manifest.contains("files") || !manifest["files"].is_object() || !manifest["files"].contains("config.yaml") ||
      !manifest["files"].contains("model.safetensors")) {
    throw CheckpointError(fmt::format("{}/manifest.json: must list config.yaml and model.safetensors", dir));
  }
  verify_manifest_files(dir, manifest);
}

std::optional<std::string> Checkpointer::latest(std::vector<std::string>* skipped) const {
  for (const auto& [step, path] : step_dirs(dir_)) {
    try {
      verify(path.string());
      return path.string();
    } catch (const CheckpointError& e) {
      if (skipped) skipped->push_back(e.what());
    }
  }
  return std::nullopt;
}

CheckpointData Checkpointer::load(const std::string& checkpoint_dir) {
  verify(checkpoint_dir);
  const fs::path dir(checkpoint_dir);
  CheckpointData data;
  try {
    data.model = io::load_safetensors_dir(checkpoint_dir, "model");
    data.optimizer = io::load_safetensors_dir(checkpoint_dir, "optimizer");
  } catch (const io::SafetensorsError& e) {
    throw CheckpointError(e.what());
  }
  data.trainer_state_json = read_text(dir / "trainer_state.json");
  data.config_yaml = read_text(dir / "config.yaml");
  return data;
}

}  // namespace latentmoe::train
