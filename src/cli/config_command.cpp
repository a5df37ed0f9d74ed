// `latentmoe config`: load, validate, dump the effective config, or print the key reference.
#include <fmt/format.h>

#include <cstdlib>
#include <filesystem>
#include <iostream>

#include "commands.h"
#include "latentmoe/config/loader.h"
#include "latentmoe/config/validate.h"
#include "latentmoe/model/param_count.h"
#include "latentmoe/parallel/shard_plan.h"
#include "latentmoe/train/recipe.h"
#include "latentmoe/util/atomic_file.h"

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

namespace {
// The picture is drawn by tools/plot_timeline.py (matplotlib): a tool, not part of training.
void plot_timeline(const train::Timeline& timeline, const std::string& png) {
  namespace fs = std::filesystem;
  const std::string data = png + ".json";
  write_text_file_atomically(data, train::timeline_json(timeline));
  std::string python = "python3";
  if (const char* env = std::getenv("LATENTMOE_PYTHON"); env && *env) {
    python = env;
  } else if (const auto venv = read_text_file(LATENTMOE_SOURCE_DIR "/.venv-path")) {
    const std::string candidate = venv->substr(0, venv->find_last_not_of(" \n") + 1) + "/bin/python";
    if (fs::exists(candidate)) python = candidate;
  }
  const auto quoted = [](const std::string& s) {  // for /bin/sh: '...' with every ' as '\''
    std::string out = "'";
    for (const char c : s) out += c == '\'' ? std::string("'\\''") : std::string(1, c);
    return out + "'";
  };
  const std::string command = fmt::format("{} {} {} --out {}", quoted(python),
                                          quoted(std::string(LATENTMOE_SOURCE_DIR) + "/tools/plot_timeline.py"),
                                          quoted(data), quoted(png));
  if (std::system(command.c_str()) != 0) {
    throw ConfigError(fmt::format("--png {}: `{}` failed (it needs matplotlib: run `bash tools/setup.sh`, or set "
                                  "LATENTMOE_PYTHON to a Python that has it); the timeline's data is in {}",
                                  png, command, data));
  }
  std::cout << "timeline plotted: " << png << " (data: " << data << ")\n";
}
}  // namespace

void add_config_command(CLI::App& app, int& exit_code) {
  auto* cmd = app.add_subcommand("config", "Load and validate a config; dump it or print the key reference");
  auto args = std::make_shared<ConfigArgs>();
  auto dump = std::make_shared<bool>(false);
  auto docs = std::make_shared<bool>(false);
  auto summary = std::make_shared<bool>(false);
  auto timeline = std::make_shared<bool>(false);
  auto stages = std::make_shared<std::vector<std::string>>();
  auto png = std::make_shared<std::string>();
  auto shard = std::make_shared<bool>(false);
  auto rank = std::make_shared<int>(0);
  args->add_to(*cmd);
  cmd->add_flag("--dump", *dump, "Print the full effective config as YAML (re-loadable)");
  cmd->add_flag("--summary", *summary, "Print parameter counts (total, activated, MTP) and FLOPs per token");
  cmd->add_flag("--docs", *docs, "Print the Markdown reference of every key (docs/configuration.md)");
  cmd->add_flag("--timeline", *timeline,
                "Print the recipe's phases (--config, then each --stage): tokens, steps, batch, LR, MTP lambda, "
                "bias speed, sequence length, rotary scaling");
  cmd->add_option("--stage", *stages,
                  "A later stage of the recipe (preset or file; repeatable, in order; --set applies to every stage)");
  cmd->add_option("--png", *png, "With --timeline: also plot LR, batch, lambda, gamma and sequence length against "
                                 "tokens into this PNG (needs the tools venv's matplotlib)");
  cmd->add_flag("--shard", *shard,
                "Print what rank --rank of --world-size holds (parameters, gradients, AdamW moments, gradient "
                "buckets) and their bytes, from the model built on the meta device (nothing allocated)");
  cmd->add_option("--rank", *rank, "With --shard: the rank (default 0)");
  cmd->callback([args, dump, docs, summary, timeline, stages, png, shard, rank, &exit_code] {
    if (*docs) {
      std::cout << config::config_reference_markdown();
      exit_code = kExitOk;
      return;
    }
    if (!*timeline && (!stages->empty() || !png->empty())) {
      throw ConfigError("--stage and --png are options of --timeline; add --timeline");
    }
    const config::Config cfg = args->load();
    const int64_t world = args->effective_world_size();
    if (*timeline) {
      std::vector<config::Config> recipe{cfg};
      for (const auto& stage : *stages) {
        ConfigArgs next = *args;
        next.config = stage;
        recipe.push_back(next.load());
      }
      const train::Timeline t = train::build_timeline(recipe);
      std::cout << train::timeline_table(t);
      if (!png->empty()) plot_timeline(t, *png);
      exit_code = kExitOk;
      return;
    }
    if (*dump) std::cout << config::dump_config_yaml(cfg);
    if (*summary) std::cout << model::model_summary(cfg);
    if (*shard) {
      if (world == config::kUnknownWorldSize) throw ConfigError("--shard needs --world-size (or $WORLD_SIZE)");
      std::cout << parallel::format_rank_shard(parallel::plan_rank_shard(cfg, static_cast<int>(world), *rank));
    } else if (*rank != 0) {
      throw ConfigError("--rank is an option of --shard; add --shard");
    }
    if (!*dump && !*summary && !*shard) {
      std::cout << "config OK: " << config::resolve_config_path(args->config) << " (name '" << cfg.name << "', "
                << args->overrides.size() << " override(s), world size "
                << (world > 0 ? std::to_string(world) : std::string("not set")) << ")\n";
    }
    exit_code = kExitOk;
  });
}

}  // namespace latentmoe::cli
