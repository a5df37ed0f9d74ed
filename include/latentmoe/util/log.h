// Logging front end. spdlog stays inside src/util/log.cpp (it is built against Debian's fmt 9,
// while torch's headers bring fmt 12): callers format with whichever fmt their translation unit
// sees and hand over a finished string. Every line carries the rank once a run is distributed.
#pragma once

#include <fmt/format.h>

#include <string>
#include <string_view>

namespace latentmoe {

enum class LogLevel { trace, debug, info, warn, error };

struct LogOptions {
  std::string level = "info";  // trace | debug | info | warn | error
  std::string file;            // also append to this file when non-empty
  int rank = -1;               // -1: taken from $RANK when set, else no rank prefix
  int world_size = -1;         // -1: taken from $WORLD_SIZE
};

// (Re)configures the global logger. Throws ConfigError for an unknown level.
void log_init(const LogOptions& options);
bool log_enabled(LogLevel level);
void log_message(LogLevel level, std::string_view message);
// Level name → LogLevel; throws ConfigError naming `key` for anything else.
LogLevel parse_log_level(std::string_view name, std::string_view key = "logging.level");

}  // namespace latentmoe

#define LMOE_LOG(level, ...)                                                          \
  do {                                                                                \
    if (::latentmoe::log_enabled(level)) {                                            \
      ::latentmoe::log_message(level, ::fmt::format(__VA_ARGS__));                    \
    }                                                                                 \
  } while (0)
#define LMOE_DEBUG(...) LMOE_LOG(::latentmoe::LogLevel::debug, __VA_ARGS__)
#define LMOE_INFO(...) LMOE_LOG(::latentmoe::LogLevel::info, __VA_ARGS__)
#define LMOE_WARN(...) LMOE_LOG(::latentmoe::LogLevel::warn, __VA_ARGS__)
#define LMOE_ERROR(...) LMOE_LOG(::latentmoe::LogLevel::error, __VA_ARGS__)
