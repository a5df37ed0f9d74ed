// spdlog behind the latentmoe logging API: console on stderr, optional file, rank prefix.
#include "latentmoe/util/log.h"

#include <spdlog/sinks/basic_file_sink.h>
#include <spdlog/sinks/stdout_color_sinks.h>
#include <spdlog/spdlog.h>

#include <cstdlib>
#include <mutex>

#include "latentmoe/util/error.h"

namespace latentmoe {

namespace {
std::mutex g_mutex;
std::shared_ptr<spdlog::logger> g_logger;
LogLevel g_level = LogLevel::info;

spdlog::level::level_enum to_spdlog(LogLevel level) {
  switch (level) {
    case LogLevel::trace: return spdlog::level::trace;
    case LogLevel::debug: return spdlog::level::debug;
    case LogLevel::info: return spdlog::level::info;
    case LogLevel::warn: return spdlog::level::warn;
    case LogLevel::error: return spdlog::level::err;
  }
  return spdlog::level::info;
}

int env_int(const char* name, int fallback) {
  const char* value = std::getenv(name);
  if (value == nullptr || *value == '\0') return fallback;
  char* end = nullptr;
  const long parsed = std::strtol(value, &end, 10);
  return (end != nullptr && *end == '\0') ? static_cast<int>(parsed) : fallback;
}

std::shared_ptr<spdlog::logger> make_logger(const LogOptions& options) {
  std::vector<spdlog::sink_ptr> sinks;
  sinks.push_back(std::make_shared<spdlog::sinks::stderr_color_sink_mt>());
  if (!options.file.empty()) {
    try {
      sinks.push_back(std::make_shared<spdlog::sinks::basic_file_sink_mt>(options.file, /*truncate=*/false));
    } catch (const spdlog::spdlog_ex& e) {
      throw ConfigError("logging.file '" + options.file + "': cannot open for writing: " + e.what());
    }
  }
  auto logger = std::make_shared<spdlog::logger>("latentmoe", sinks.begin(), sinks.end());
  const int rank = options.rank >= 0 ? options.rank : env_int("RANK", -1);
  const int world = options.world_size >= 0 ? options.world_size : env_int("WORLD_SIZE", 1);
  const std::string rank_part = (rank >= 0 && (world > 1 || options.rank >= 0)) ? "[rank " + std::to_string(rank) + "] " : "";
  logger->set_pattern("[%Y-%m-%d %H:%M:%S.%e] " + rank_part + "[%^%l%$] %v");
  logger->flush_on(spdlog::level::warn);
  return logger;
}
}  // namespace

LogLevel parse_log_level(std::string_view name, std::string_view key) {
  if (name == "trace") return LogLevel::trace;
  if (name == "debug") return LogLevel::debug;
  if (name == "info") return LogLevel::info;
  if (name == "warn") return LogLevel::warn;
  if (name == "error") return LogLevel::error;
  throw ConfigError(std::string(key) + " must be one of trace, debug, info, warn, error; got '" + std::string(name) + "'");
}

void log_init(const LogOptions& options) {
  const LogLevel level = parse_log_level(options.level);
  auto logger = make_logger(options);
  logger->set_level(to_spdlog(level));
  std::lock_guard<std::mutex> lock(g_mutex);
  g_logger = std::move(logger);
  g_level = level;
}

bool log_enabled(LogLevel level) { return level >= g_level; }

void log_message(LogLevel level, std::string_view message) {
  std::shared_ptr<spdlog::logger> logger;
  {
    std::lock_guard<std::mutex> lock(g_mutex);
    if (!g_logger) {
      g_logger = make_logger(LogOptions{});
      g_logger->set_level(to_spdlog(g_level));
    }
    logger = g_logger;
  }
  logger->log(to_spdlog(level), message);
}

}  // namespace latentmoe
