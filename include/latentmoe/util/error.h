// Error types shared by every area, and the process exit codes they map to (documented in the
// README): config/usage errors exit 2 before any heavy work; other failures exit 1.
#pragma once

#include <stdexcept>
#include <string>

namespace latentmoe {

enum ExitCode : int {
  kExitOk = 0,
  kExitFailure = 1,
  kExitConfigError = 2,
  // 3, 4, 6 and 7 belong to `train` (train::TrainExit)
  kExitCheckFailed = 5,  // `train`: an --expect expression or a --golden check failed
};

// Invalid configuration or command-line input. The message names the key (path, file:line or
// --set), the bad value and what is allowed.
class ConfigError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

}  // namespace latentmoe
