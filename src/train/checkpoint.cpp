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
#include "latentmoe/util/hash.h"

namespace latentmoe::train {

namespace fs = std::filesystem;
using json = nlohmann::json;

namespace {
constexpr const char* kMarker = "COMMITTED";
constexpr const char* kFiles[] = {"model.safetensors", "optimizer.safetensors", "trainer_state.json", "config.yaml"};

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
  const fs::path final_dir = fs::path(dir_) / step_dir_name(step);
  const fs::path tmp = fs::path(dir_) / fmt::format(".{}.tmp-{}", step_dir_name(step), ::getpid());
  fs::remove_all(tmp);
  fs::create_directories(tmp);
  io::save_safetensors((tmp / "model.safetensors").string(), as_list(data.model), {{"format", "latentmoe"}});
  io::save_safetensors((tmp / "optimizer.safetensors").string(), as_list(data.optimizer), {{"format", "latentmoe"}});
  write_text(tmp / "trainer_state.json", data.trainer_state_json);
  write_text(tmp / "config.yaml", data.config_yaml);
  json manifest = {{"step", step}, {"files", json::object()}};
  for (const char* f : kFiles) {
    fsync_path(tmp / f);
    manifest["files"][f] = sha256_file_hex((tmp / f).string());
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
  return final_dir.string();
}

void Checkpointer::prune() const {
  int64_t kept = 0;
  for (const auto& [step, path] : step_dirs(dir_)) {
    if (!fs::exists(path / kMarker)) continue;
    if (++kept > keep_last_) fs::remove_all(path);
  }
}

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
  for (const char* f : kFiles) {
    if (!manifest["files"].contains(f)) throw CheckpointError(fmt::format("{}/manifest.json: no entry for {}", checkpoint_dir, f));
    if (!fs::exists(dir / f)) throw CheckpointError(fmt::format("{}/{}: missing", checkpoint_dir, f));
    const std::string actual = sha256_file_hex((dir / f).string());
    if (actual != manifest["files"][f].get<std::string>()) {
      throw CheckpointError(fmt::format("{}/{}: SHA-256 mismatch (expected {}, got {}): the file is corrupt", checkpoint_dir, f,
                                        manifest["files"][f].get<std::string>(), actual));
    }
  }
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
  const io::SafetensorsFile model((dir / "model.safetensors").string());
  for (const auto& [name, e] : model.entries()) data.model.emplace(name, model.tensor(name).clone());
  const io::SafetensorsFile optimizer((dir / "optimizer.safetensors").string());
  for (const auto& [name, e] : optimizer.entries()) data.optimizer.emplace(name, optimizer.tensor(name).clone());
  data.trainer_state_json = read_text(dir / "trainer_state.json");
  data.config_yaml = read_text(dir / "config.yaml");
  return data;
}

}  // namespace latentmoe::train
