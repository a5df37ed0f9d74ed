// The `latentmoe` executable: subcommands and the mapping of failures to exit codes
// (0 ok, 1 runtime failure, 2 config or usage error; `train` adds 3 = stopped by a signal after
// saving, 4 = non-finite loss; README "Exit codes").
#include <CLI/CLI.hpp>

#include <cstdio>
#include <exception>

#include "commands.h"
#include "latentmoe/data/indexed_dataset.h"
#include "latentmoe/data/tokenizer.h"
#include "latentmoe/io/safetensors.h"
#include "latentmoe/train/checkpoint.h"
#include "latentmoe/util/error.h"

namespace latentmoe::cli {

FailureReport describe_failure(const std::exception& e) {
  if (dynamic_cast<const ConfigError*>(&e)) return {"config error", e.what(), kExitConfigError};
  if (dynamic_cast<const data::TokenizerError*>(&e)) return {"tokenizer error", e.what(), kExitConfigError};
  if (dynamic_cast<const data::DataError*>(&e)) return {"data error", e.what(), kExitFailure};
  if (dynamic_cast<const train::CheckpointError*>(&e) || dynamic_cast<const io::SafetensorsError*>(&e)) {
    return {"checkpoint error", e.what(), kExitFailure};
  }
  if (const auto* c10 = dynamic_cast<const c10::Error*>(&e)) return {"error", c10->what_without_backtrace(), kExitFailure};
  return {"error", e.what(), kExitFailure};
}

}  // namespace latentmoe::cli

int main(int argc, char** argv) {
  using namespace latentmoe;
  CLI::App app{"latentmoe: train DeepSeek-V3-style models (MLA, DeepSeekMoE, MTP) in C++"};
  app.require_subcommand(1);
  app.set_help_all_flag("--help-all", "Help for every subcommand");
  int exit_code = kExitOk;
  cli::add_config_command(app, exit_code);
  cli::add_version_command(app, exit_code);
  cli::add_train_command(app, exit_code);
  cli::add_eval_command(app, exit_code);
  cli::add_init_command(app, exit_code);
  cli::add_convert_command(app, exit_code);
  cli::add_forward_command(app, exit_code);
  cli::add_generate_command(app, exit_code);
  cli::add_prepare_data_command(app, exit_code);
  cli::add_tokenize_command(app, exit_code);
  cli::add_inspect_data_command(app, exit_code);
  try {
    app.parse(argc, argv);
  } catch (const CLI::Success& e) {
    return app.exit(e);
  } catch (const CLI::ParseError& e) {
    app.exit(e);
    return kExitConfigError;
  } catch (const std::exception& e) {
    const cli::FailureReport failure = cli::describe_failure(e);
    std::fprintf(stderr, "latentmoe: %s: %s\n", failure.kind, failure.message.c_str());
    return failure.exit_code;
  }
  return exit_code;
}
