// `latentmoe config`: load, validate, dump the effective config, or print the key reference.
#include <cstdlib>
#include <iostream>

#include "commands.h"
#include "latentmoe/config/loader.h"
#include "latentmoe/config/validate.h"
#include "latentmoe/model/param_count.h"

namespace latentmoe::cli {

void ConfigArgs::add_to(CLI::App& command) {
  command.add_option("-c,--config", config, "Preset name (" + [] {
    std::string names;
    for (const auto& n : config::preset_names()) names += (names.empty() ? "" : ", ") + n;
    return names;
  }() + ") or a .yaml/.json file")->capture_default_str();
  command.add_option("-s,--set", overrides, "Override a key: section.key=value (repeatable)")->allow_extra_args(false);
  command.add_option("--world-size", world_size, "Ranks to validate against (default: $WORLD_SIZE; unset skips the world-size rules)");
}

int64_t ConfigArgs::effective_world_size() const {
  if (world_size != 0) return world_size;
  const char* env = std::getenv("WORLD_SIZE");
  if (env != nullptr && *env != '\0') {
    try {
      return std::stoll(env);
    } catch (const std::exception&) {
      throw ConfigError(std::string("environment WORLD_SIZE='") + env + "' is not an integer");
    }
  }
  return config::kUnknownWorldSize;
}

config::Config ConfigArgs::load() const {
  config::Config cfg = config::load_config(config, overrides);
  config::validate_config(cfg, effective_world_size());
  return cfg;
}

void add_config_command(CLI::App& app, int& exit_code) {
  auto* cmd = app.add_subcommand("config", "Load and validate a config; dump it or print the key reference");
  auto args = std::make_shared<ConfigArgs>();
  auto dump = std::make_shared<bool>(false);
  auto docs = std::make_shared<bool>(false);
  auto summary = std::make_shared<bool>(false);
  args->add_to(*cmd);
  cmd->add_flag("--dump", *dump, "Print the full effective config as YAML (re-loadable)");
  cmd->add_flag("--summary", *summary, "Print parameter counts (total, activated, MTP) and FLOPs per token");
  cmd->add_flag("--docs", *docs, "Print the Markdown reference of every key (docs/configuration.md)");
  cmd->callback([args, dump, docs, summary, &exit_code] {
    if (*docs) {
      std::cout << config::config_reference_markdown();
      exit_code = kExitOk;
      return;
    }
    const config::Config cfg = args->load();
    const int64_t world = args->effective_world_size();
    if (*dump) std::cout << config::dump_config_yaml(cfg);
    if (*summary) std::cout << model::model_summary(cfg);
    if (!*dump && !*summary) {
      std::cout << "config OK: " << config::resolve_config_path(args->config) << " (name '" << cfg.name << "', "
                << args->overrides.size() << " override(s), world size "
                << (world > 0 ? std::to_string(world) : std::string("not set")) << ")\n";
    }
    exit_code = kExitOk;
  });
}

}  // namespace latentmoe::cli
