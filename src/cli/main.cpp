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

namespace {
int report(const char* kind, const char* message, int exit_code) {
  std::fprintf(stderr, "latentmoe: %s: %s\n", kind, message);
  return exit_code;
}
}  // namespace

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
  } catch (const ConfigError& e) {
    return report("config error", e.what(), kExitConfigError);
  } catch (const data::TokenizerError& e) {
    return report("tokenizer error", e.what(), kExitConfigError);
  } catch (const data::DataError& e) {
    return report("data error", e.what(), kExitFailure);
  } catch (const train::CheckpointError& e) {
    return report("checkpoint error", e.what(), kExitFailure);
  } catch (const io::SafetensorsError& e) {
    return report("checkpoint error", e.what(), kExitFailure);
  } catch (const c10::Error& e) {
    return report("error", e.what_without_backtrace(), kExitFailure);
  } catch (const std::exception& e) {
    return report("error", e.what(), kExitFailure);
  }
  return exit_code;
}
