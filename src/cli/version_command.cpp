// `latentmoe version`: versions and what this machine's runtime offers.
#include <iostream>

#include "commands.h"
#include "latentmoe/util/runtime_info.h"

namespace latentmoe::cli {

void add_version_command(CLI::App& app, int& exit_code) {
  auto* cmd = app.add_subcommand("version", "Print versions, CUDA availability, threads and BLAS/oneDNN info");
  cmd->callback([&exit_code] {
    std::cout << runtime_report();
    exit_code = kExitOk;
  });
}

}  // namespace latentmoe::cli
