// Strict state loading and latentmoe model directories.
#include <ATen/ATen.h>
#include <fmt/format.h>
#include <fmt/ranges.h>

#include <filesystem>
#include <fstream>
#include <set>

#include "latentmoe/config/loader.h"
#include "latentmoe/io/model_io.h"
#include "latentmoe/io/safetensors.h"

namespace latentmoe::io {

namespace fs = std::filesystem;

std::map<std::string, at::Tensor> model_state(model::DeepSeekV3Impl& model) {
  std::map<std::string, at::Tensor> state;
  for (const auto& p : model.named_parameters()) state.emplace(p.key(), p.value());
  for (const auto& b : model.named_buffers()) state.emplace(b.key(), b.value());
  return state;
}

namespace {
std::string list_names(const std::vector<std::string>& names) {
  std::string out;
  for (size_t i = 0; i < names.size() && i < 8; ++i) out += (i ? ", " : "") + names[i];
  if (names.size() > 8) out += fmt::format(", ... ({} in all)", names.size());
  return out;
}
}  // namespace

void load_model_state(model::DeepSeekV3Impl& model, const std::map<std::string, at::Tensor>& tensors,
                      const std::string& source) {
  const std::map<std::string, at::Tensor> state = model_state(model);
  std::vector<std::string> missing, unexpected, mismatched;
  for (const auto& [name, target] : state) {
    const auto it = tensors.find(name);
    if (it == tensors.end()) {
      missing.push_back(name);
    } else if (it->second.sizes() != target.sizes()) {
      mismatched.push_back(fmt::format("{} (file {}, model {})", name, fmt::join(it->second.sizes(), "x"),
                                       fmt::join(target.sizes(), "x")));
    }
  }
  for (const auto& [name, t] : tensors) {
    if (!state.count(name)) unexpected.push_back(name);
  }
  if (!missing.empty() || !unexpected.empty() || !mismatched.empty()) {
    std::string msg = fmt::format("{}: does not match the model architecture; nothing was loaded.", source);
    if (!missing.empty()) msg += "\n  missing tensors: " + list_names(missing);
    if (!unexpected.empty()) msg += "\n  unexpected tensors: " + list_names(unexpected);
    if (!mismatched.empty()) msg += "\n  shape mismatches: " + list_names(mismatched);
    throw SafetensorsError(msg);
  }
  at::NoGradGuard no_grad;
  for (const auto& [name, target] : state) {
    at::Tensor t = target;
    t.copy_(tensors.at(name));
  }
}

void save_model_dir(const std::string& dir, const config::Config& cfg, model::DeepSeekV3Impl& model) {
  fs::create_directories(dir);
  std::vector<std::pair<std::string, at::Tensor>> tensors;
  for (const auto& [name, t] : model_state(model)) tensors.emplace_back(name, t);
  save_safetensors((fs::path(dir) / "model.safetensors").string(), tensors, {{"format", "latentmoe"}});
  const std::string config_path = (fs::path(dir) / "config.yaml").string();
  std::ofstream(config_path + ".tmp") << config::dump_config_yaml(cfg);
  fs::rename(config_path + ".tmp", config_path);
}

config::Config load_model_dir_config(const std::string& dir) {
  const fs::path path = fs::path(dir) / "config.yaml";
  if (!fs::exists(path)) {
    throw SafetensorsError(fmt::format("{}: not a latentmoe model directory (no config.yaml); for an HF directory "
                                       "use `latentmoe convert --from-hf`",
                                       dir));
  }
  return config::load_config_file(path.string());
}

model::DeepSeekV3 load_model_dir(const std::string& dir, config::Config* cfg_out) {
  const config::Config cfg = load_model_dir_config(dir);
  model::DeepSeekV3 m(cfg.model);
  load_model_state(*m, load_safetensors_dir(dir), dir);
  if (cfg_out) *cfg_out = cfg;
  return m;
}

}  // namespace latentmoe::io
