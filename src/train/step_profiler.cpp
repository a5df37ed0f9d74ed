// Kineto (libtorch's profiler) on the CPU activities; events are copied out as ProfiledEvent for
// the torch-free table, the trace is written by the profiler itself.
#include "latentmoe/train/step_profiler.h"

#include <ATen/record_function.h>
#include <torch/csrc/autograd/profiler_kineto.h>

#include <fstream>

#include "latentmoe/util/log.h"

namespace latentmoe::train {

namespace prof = torch::autograd::profiler;
using torch::profiler::impl::ActivityType;
using torch::profiler::impl::ProfilerConfig;
using torch::profiler::impl::ProfilerState;

struct StepProfiler::Scope {
  at::RecordFunction record{at::RecordScope::USER_SCOPE};
};

StepProfiler::StepProfiler(int64_t steps, std::filesystem::path dir, int rank)
    : steps_(steps), dir_(std::move(dir)), rank_(rank) {}

StepProfiler::~StepProfiler() {
  if (active_) {
    scope_.reset();
    try {
      prof::disableProfiler();
    } catch (...) {  // already failing: the trace is lost, the run's error matters more
    }
  }
}

const char* StepProfiler::step_scope() { return "latentmoe.step"; }

void StepProfiler::before_step(int64_t step, int64_t first_step_of_run) {
  if (finished_) return;
  if (start_ < 0) {
    start_ = first_step_of_run + 1;  // one warm-up step: first-touch allocations, caches
    end_ = start_ + steps_ - 1;
  }
  if (step == start_ && !active_) {
    const ProfilerConfig config(ProfilerState::KINETO, /*report_input_shapes=*/true);
    const std::set<ActivityType> activities{ActivityType::CPU};
    prof::prepareProfiler(config, activities);
    prof::enableProfiler(config, activities);
    active_ = true;
    LMOE_INFO("profiling steps {} to {} (--profile {})", start_, end_, steps_);
  }
  if (active_) {
    scope_ = std::make_unique<Scope>();
    scope_->record.before(step_scope());
  }
}

void StepProfiler::after_step(int64_t step) {
  if (!active_) return;
  scope_.reset();  // ends the step scope
  if (step >= end_) finish();
}

void StepProfiler::finish() {
  const std::unique_ptr<prof::ProfilerResult> result = prof::disableProfiler();
  active_ = false;
  finished_ = true;
  std::filesystem::create_directories(dir_);
  const std::filesystem::path trace = dir_ / fmt::format("trace-rank{}.json", rank_);
  result->save(trace.string());
  std::vector<ProfiledEvent> events;
  events.reserve(result->events().size());
  for (const auto& e : result->events()) {
    if (e.deviceType() != c10::DeviceType::CPU) continue;
    events.push_back({e.name(), e.startThreadId(), e.startNs(), e.endNs()});
  }
  const ProfileTable table = build_profile_table(events, step_scope());
  const std::string text = format_profile_table(table);
  const std::filesystem::path table_file = dir_ / fmt::format("table-rank{}.txt", rank_);
  std::ofstream(table_file) << text << "\n";
  LMOE_INFO("profile of {} steps (trace {}):\n{}", table.steps, trace.string(), text);
}

}  // namespace latentmoe::train
