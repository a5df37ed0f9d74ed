// Step time by category from profiler events: each op's self time (its duration minus that of
// the ops it called) goes to the first category matching the op or one of its callers; time of
// the profiled steps outside any op is "other". Torch-free, so the rules are unit-tested alone.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace latentmoe::train {

struct ProfiledEvent {
  std::string name;
  uint64_t thread = 0;
  uint64_t start_ns = 0;
  uint64_t end_ns = 0;
};

struct CategoryTime {
  std::string category;
  double seconds = 0;
  double fraction = 0;  // of the profiled steps' wall time
};

struct ProfileTable {
  double step_seconds = 0;  // wall time of the profiled steps (sum of the step scopes)
  int64_t steps = 0;
  std::vector<CategoryTime> rows;  // kProfileCategories order
};

// The fixed order of the table's rows.
const std::vector<std::string>& profile_categories();

// The category of an op given the names of its callers, innermost first.
std::string profile_category(const std::string& name, const std::vector<const std::string*>& callers);

// `step_scope` names the record-function scope around each step (the table's time base).
ProfileTable build_profile_table(const std::vector<ProfiledEvent>& events, const std::string& step_scope);

std::string format_profile_table(const ProfileTable& table);

}  // namespace latentmoe::train
