// Cross-field validation: one rule per check, each message naming every key involved and the
// values that conflict. Runs before any heavy work (exit code 2 on failure).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "latentmoe/config/config.h"

namespace latentmoe::config {

// Marks the world size as not known yet (`latentmoe config` outside a launcher): the rules that
// involve it (parallel.ep | world, batch divisibility by data-parallel ranks) are skipped.
inline constexpr int64_t kUnknownWorldSize = 0;

// All violated rules, as messages; empty when the config is valid. world_size is the number of
// processes the run is launched with (= data-parallel degree), or kUnknownWorldSize.
std::vector<std::string> config_violations(const Config& cfg, int64_t world_size);

// Throws ConfigError listing every violation.
void validate_config(const Config& cfg, int64_t world_size);

}  // namespace latentmoe::config
