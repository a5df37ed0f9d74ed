// Subcommand registration for the `latentmoe` CLI. Each command's callback returns through
// CommandResult so main() owns the process exit code.
#pragma once

#include <ATen/core/Tensor.h>
#include <CLI/CLI.hpp>

#include <exception>
#include <string>
#include <vector>

#include "latentmoe/config/config.h"
#include "latentmoe/util/error.h"

namespace latentmoe::cli {

// The --config/--set pair every config-taking command shares.
struct ConfigArgs {
  std::string config = "debug";
  std::vector<std::string> overrides;
  int64_t world_size = 0;  // 0: $WORLD_SIZE, else unknown (world-size rules skipped)
  void add_to(CLI::App& command);
  // Loads, applies overrides and validates (throws ConfigError).
  config::Config load() const;
  int64_t effective_world_size() const;
};

// "1,2,3" or "1,2;3,4" → rows of token ids (ConfigError naming `option` on bad input).
std::vector<std::vector<int64_t>> parse_id_rows(const std::string& text, const std::string& option);
// Rows → int64 [rows, cols] tensor; ids must lie in [0, vocab).
at::Tensor ids_tensor(const std::vector<std::vector<int64_t>>& rows, int64_t vocab, const std::string& option);

// How main() reports a failure: its kind, its message (without a C++ backtrace) and the exit code.
struct FailureReport {
  const char* kind;
  std::string message;
  int exit_code;
};
FailureReport describe_failure(const std::exception& e);

void add_config_command(CLI::App& app, int& exit_code);
void add_version_command(CLI::App& app, int& exit_code);
void add_convert_command(CLI::App& app, int& exit_code);
void add_init_command(CLI::App& app, int& exit_code);
void add_prepare_data_command(CLI::App& app, int& exit_code);
void add_tokenize_command(CLI::App& app, int& exit_code);
void add_inspect_data_command(CLI::App& app, int& exit_code);
void add_train_command(CLI::App& app, int& exit_code);
void add_eval_command(CLI::App& app, int& exit_code);
void add_forward_command(CLI::App& app, int& exit_code);
void add_generate_command(CLI::App& app, int& exit_code);

}  // namespace latentmoe::cli
