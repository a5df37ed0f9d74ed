// The `latentmoe` executable: subcommands and the mapping of failures to exit codes
// (0 ok, 1 runtime failure, 2 config or usage error).
#include <CLI/CLI.hpp>

#include <cstdio>
#include <exception>

#include "commands.h"
#include "latentmoe/data/indexed_dataset.h"
#include "latentmoe/data/tokenizer.h"
#include "latentmoe/io/safetensors.h"
#include "latentmoe/train/checkpoint.h"
#include "latentmoe/util/error.h"

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
    std::fprintf(stderr, "latentmoe: config error: %s\n", e.what());
    return kExitConfigError;
  } catch (const data::TokenizerError& e) {
    std::fprintf(stderr, "latentmoe: tokenizer error: %s\n", e.what());
    return kExitConfigError;
  } catch (const data::DataError& e) {
    std::fprintf(stderr, "latentmoe: data error: %s\n", e.what());
    return kExitFailure;
  } catch (const train::CheckpointError& e) {
    std::fprintf(stderr, "latentmoe: checkpoint error: %s\n", e.what());
    return kExitFailure;
  } catch (const io::SafetensorsError& e) {
    std::fprintf(stderr, "latentmoe: checkpoint error: %s\n", e.what());
    return kExitFailure;
  } catch (const c10::Error& e) {
    std::fprintf(stderr, "latentmoe: error: %s\n", e.what_without_backtrace());
    return kExitFailure;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "latentmoe: error: %s\n", e.what());
    return kExitFailure;
  }
  return exit_code;
}
