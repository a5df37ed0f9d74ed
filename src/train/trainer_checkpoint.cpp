// The trainer's state in checkpoints: what is saved beside the model and optimizer (trainer
// state JSON: step, tokens, data position, spike window, idle counters, lineage), saving,
// resuming with the warnings a changed data stream deserves, and starting a new stage from
// another run's checkpoint (`train --init-from`).
#include <fmt/format.h>
#include <fmt/ranges.h>

#include <algorithm>
#include <filesystem>
#include <nlohmann/json.hpp>

#include "latentmoe/config/loader.h"
#include "latentmoe/io/model_io.h"
#include "latentmoe/train/recipe.h"
#include "latentmoe/train/trainer.h"
#include "latentmoe/util/atomic_file.h"
#include "latentmoe/util/error.h"
#include "latentmoe/util/hash.h"
#include "latentmoe/util/log.h"

namespace latentmoe::train {

namespace fs = std::filesystem;
using json = nlohmann::json;

void check_stage_directories(const config::Config& cfg, const std::string& init_from) {
  // The source run stays untouched: our checkpoints (and keep_last's pruning), our metrics and
  // our locks must live elsewhere than its checkpoint.dir and logging.dir.
  const fs::path source_dir = fs::weakly_canonical(init_from);
  std::vector<fs::path> source_dirs{source_dir.parent_path(), source_dir};
  if (const auto text = read_text_file(init_from + "/config.yaml")) {
    try {  // its logging.dir, as the source run resolved it (from the same working directory, usually)
      source_dirs.push_back(fs::weakly_canonical(config::load_config_text(*text, init_from + "/config.yaml").logging.dir));
    } catch (const ConfigError&) {
      // a damaged config.yaml fails verification when the checkpoint is loaded, naming the file
    }
  }
  for (const auto& [key, dir] : {std::pair{"checkpoint.dir", cfg.checkpoint.dir}, std::pair{"logging.dir", cfg.logging.dir}}) {
    const fs::path own = fs::weakly_canonical(dir);
    if (std::find(source_dirs.begin(), source_dirs.end(), own) != source_dirs.end()) {
      throw ConfigError(fmt::format("--init-from {}: this stage's {} {} is one of the source run's directories, where "
                                    "this run's checkpoints, metrics and locks would mix with the source run's (and "
                                    "checkpoint.keep_last could prune them); give the new stage its own {}",
                                    init_from, key, dir, key));
    }
  }
}

namespace {
std::string config_sha256(const std::string& config_yaml) { return sha256_hex(config_yaml.data(), config_yaml.size()); }

// The checkpoint verified and loaded, or a CheckpointError that says which option read it.
CheckpointData load_verified(const std::string& path, const char* option) {
  try {
    return Checkpointer::load(path);
  } catch (const std::exception& e) {
    throw CheckpointError(fmt::format("{} {}: {}", option, path, e.what()));
  }
}
}  // namespace

std::string Trainer::trainer_state_json() const {
  return json{{"step", step_},
              {"tokens_seen", tokens_seen_},
              {"consumed_samples", consumed_samples_},
              {"spikes_skipped", spikes_skipped_},
              {"loss_window", loss_window_},
              {"idle_steps", idle_steps_},
              {"data_paths", data_paths_},
              {"name", cfg_.name},
              // This stage, and the stages and checkpoints it descends from (oldest first).
              {"stage", {{"name", cfg_.name}, {"config_sha256", config_sha256(config::dump_config_yaml(cfg_))}}},
              {"lineage", lineage_.is_array() ? lineage_ : json::array()}}
      .dump(2);
}

std::string Trainer::save_checkpoint() {
  const std::map<std::string, torch::Tensor> optimizer_state =
      parallel_->full_optimizer_state(optimizer_->state());  // collective under ZeRO-1
  const std::map<std::string, torch::Tensor> model_state = io::model_state(*model_);
  CheckpointShard shard;
  // Each tensor is written once over all ranks (all of them by one process).
  std::vector<std::pair<std::string, int64_t>> tensors;
  for (const auto& [name, t] : model_state) tensors.emplace_back(name, t.numel());
  const std::vector<bool> writes = parallel_->checkpoint_writes(tensors);
  std::map<std::string, bool> writer;
  size_t i = 0;
  for (const auto& [name, t] : model_state) {
    shard.held.push_back(name);
    writer[name] = writes[i++];
    if (writer[name]) shard.model.emplace_back(name, t);
  }
  for (const auto& [name, t] : optimizer_state) {
    const std::string param = name.substr(name.find('.') + 1);
    if (name == "step" ? rank_ == 0 : writer.at(param)) shard.optimizer.emplace_back(name, t);
  }
  const std::string path = checkpointer_->save(step_, shard, trainer_state_json(), config::dump_config_yaml(cfg_), comm_);
  if (rank_ == 0) LMOE_INFO("checkpoint committed: {}", path);
  last_checkpoint_ = path;
  saved_checkpoints_.push_back(path);
  return path;
}

void Trainer::resume(const std::string& spec) {
  std::string path = spec;
  if (spec == "auto") {
    std::vector<std::string> skipped;
    const auto latest = checkpointer_->latest(&skipped);
    for (const auto& reason : skipped) LMOE_WARN("resume: skipped {}", reason);
    // Every rank must resume from the same step, or their collectives would not match.
    const int64_t mine = latest ? std::stoll(fs::path(*latest).filename().string().substr(5)) : -1;
    if (!parallel_->all_agree(mine, "resume agreement all-reduce")) {
      throw std::runtime_error(fmt::format("rank {}: the ranks found different newest committed checkpoints in {} (this "
                                           "rank: {}); checkpoint.dir must be one directory that every rank sees",
                                           rank_, cfg_.checkpoint.dir, latest.value_or("none")));
    }
    if (!latest) {
      LMOE_INFO("resume auto: no committed checkpoint in {}, starting from scratch", cfg_.checkpoint.dir);
      return;
    }
    path = *latest;
  }
  CheckpointData data = Checkpointer::load(path);
  const config::Config saved = config::load_config_text(data.config_yaml, path + "/config.yaml");
  config::Config saved_model_only, current_model_only;
  saved_model_only.model = saved.model;
  current_model_only.model = cfg_.model;
  if (!(saved_model_only == current_model_only)) {
    const bool stage_change = stage_incompatible_model_keys(saved.model, cfg_.model).empty();
    throw ConfigError(fmt::format("{}: the checkpoint's model section differs from the config's; resume needs the same "
                                  "architecture (compare `latentmoe config --dump` with {}/config.yaml){}", path, path,
                                  stage_change ? "; only the context extension differs: start that stage with "
                                                 "`train --init-from` and its own checkpoint.dir"
                                               : ""));
  }
  // Resuming continues the saved data stream only if these match; a change is allowed but said.
  for (const auto& [key, from, to] : config::differing_keys(saved, cfg_)) {
    const bool stream = key == "seed" || key == "data.paths" || key == "data.weights" || key == "data.valid_fraction" ||
                        key == "data.fim_rate" || key == "data.fim_spm_rate" || key == "train.seq_len" ||
                        key == "train.global_batch_size" || key.starts_with("train.batch_ramp.");
    if (stream && rank_ == 0) {
      LMOE_WARN("resume: {} is {} in {} but {} now: the run continues from the saved position with another data "
                "stream, not as the saved run would have{}", key, from, path, to,
                key == "train.seq_len" ? " (a new stage at another length is `train --init-from` with its own "
                                         "checkpoint.dir)" : "");
    }
  }
  load_model_tensors(data, path);
  optimizer_->load_state(data.optimizer);
  const json state = json::parse(data.trainer_state_json);
  step_ = state.at("step").get<int64_t>();
  tokens_seen_ = state.at("tokens_seen").get<int64_t>();
  consumed_samples_ = state.at("consumed_samples").get<int64_t>();
  spikes_skipped_ = state.at("spikes_skipped").get<int64_t>();
  loss_window_ = state.at("loss_window").get<std::vector<double>>();
  idle_steps_ = state.at("idle_steps").get<std::vector<int64_t>>();
  lineage_ = state.value("lineage", json::array());
  last_checkpoint_ = path;
  LMOE_INFO("resumed from {} at step {} ({} tokens, {} samples consumed)", path, step_, tokens_seen_, consumed_samples_);
}

void Trainer::load_model_tensors(const CheckpointData& data, const std::string& path) {
  // Names are global, so a checkpoint from any world size or EP degree holds what this rank needs.
  std::map<std::string, torch::Tensor> needed;
  for (const auto& [name, t] : io::model_state(*model_)) {
    if (const auto it = data.model.find(name); it != data.model.end()) needed.emplace(name, it->second);
  }
  io::load_model_state(*model_, needed, path);
}

Trainer::StageSource Trainer::load_stage_weights(const std::string& checkpoint_dir, const char* option) {
  StageSource source{.data = load_verified(checkpoint_dir, option), .config = {}, .state = {}};
  source.config = config::load_config_text(source.data.config_yaml, checkpoint_dir + "/config.yaml");
  if (const auto differing = stage_incompatible_model_keys(source.config.model, cfg_.model); !differing.empty()) {
    std::string list;
    for (const auto& d : differing) list += "\n  " + d;
    throw ConfigError(fmt::format("{} {}: the checkpoint is another architecture; only model.rope_scaling.* and "
                                  "model.max_position_embeddings may differ (a context extension), but {} other model "
                                  "key{} differ:{}", option, checkpoint_dir, differing.size(),
                                  differing.size() == 1 ? "" : "s", list));
  }
  load_model_tensors(source.data, checkpoint_dir);
  source.state = json::parse(source.data.trainer_state_json);
  return source;
}

int64_t Trainer::load_weights(const std::string& checkpoint_dir) {
  return load_stage_weights(checkpoint_dir, "--checkpoint").state.at("step").get<int64_t>();
}

void Trainer::init_from(const std::string& checkpoint_dir) {
  check_stage_directories(cfg_, checkpoint_dir);
  const fs::path source_dir = fs::weakly_canonical(checkpoint_dir);
  if (step_ > 0) {  // --resume auto found this stage's own checkpoints: continue them if they descend from the source
    const std::string parent = lineage_.is_array() && !lineage_.empty() ? lineage_.back().value("checkpoint", "") : "";
    if (parent != source_dir.string()) {
      throw ConfigError(fmt::format("--init-from {}: checkpoint.dir {} holds a run (resumed at step {}) that did not start "
                                    "from it (its parent: {}); give this stage a new checkpoint.dir, or drop --init-from "
                                    "to continue that run", checkpoint_dir, cfg_.checkpoint.dir, step_,
                                    parent.empty() ? std::string("none, it started from scratch") : parent));
    }
    LMOE_INFO("stage '{}' continues from its own checkpoint at step {} (started from {})", cfg_.name, step_, parent);
    return;
  }
  if (const auto existing = checkpointer_->latest()) {
    throw ConfigError(fmt::format("--init-from {}: checkpoint.dir {} already holds this stage's committed checkpoint {}; "
                                  "add --resume auto to continue the stage from it, or give a new checkpoint.dir",
                                  checkpoint_dir, cfg_.checkpoint.dir, *existing));
  }
  const StageSource loaded = load_stage_weights(checkpoint_dir, "--init-from");
  const config::Config& source = loaded.config;
  const json& state = loaded.state;
  const int64_t source_step = state.at("step").get<int64_t>();
  if (cfg_.train.init_optimizer == "carry") optimizer_->load_state(loaded.data.optimizer);
  lineage_ = state.value("lineage", json::array());
  const std::string manifest = read_text_file(checkpoint_dir + "/manifest.json").value_or("");
  lineage_.push_back({{"stage", source.name},
                      {"config_sha256", config_sha256(loaded.data.config_yaml)},
                      {"checkpoint", source_dir.string()},
                      {"manifest_sha256", sha256_hex(manifest.data(), manifest.size())},
                      {"step", source_step},
                      {"tokens", state.value("tokens_seen", int64_t{0})},
                      {"optimizer", cfg_.train.init_optimizer}});
  std::vector<std::string> changed;
  for (const auto& [key, from, to] : config::differing_keys(source, cfg_)) {
    const bool reported = key == "train.seq_len" || key == "train.global_batch_size" || key == "optimizer.lr" ||
                          key == "model.max_position_embeddings" || key.starts_with("model.rope_scaling.");
    if (reported) changed.push_back(fmt::format("{} {} -> {}", key, from, to));
  }
  LMOE_INFO("new stage '{}' from {} (stage '{}', step {}): weights loaded, AdamW state {}; {}", cfg_.name, checkpoint_dir,
            source.name, source_step, cfg_.train.init_optimizer == "carry" ? "carried" : "reset",
            changed.empty() ? std::string("no context or batch change") : fmt::format("{}", fmt::join(changed, ", ")));
}

}  // namespace latentmoe::train
