// Golden runs: a training run's per-step loss components, gradient norms and per-layer expert
// loads, recorded once (`train --golden FILE --golden-write`) and checked against later runs
// (`train --golden FILE`). Exact when the environment matches, within recorded tolerances when it
// does not (another thread count, CPU, compiler or torch). No torch headers.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <utility>
#include <vector>

namespace latentmoe::train {

// What decides whether two runs can be bit-identical (README "Golden runs").
struct RunEnvironment {
  std::string latentmoe_version, torch_version, compiler, cpu_model, cpu_capability, compute_dtype;
  int64_t threads = 0, world_size = 1;
  std::string data;  // fingerprint of the training data and tokenizer (the default corpus is a Debian package)
  bool operator==(const RunEnvironment&) const = default;
};

// One optimizer step's numbers. scalars: "loss/total", "loss/lm", "loss/mtp", "loss/balance",
// "loss/z", "grad_norm". expert_load[layer][expert]: tokens routed in the step (empty when the
// update was skipped).
struct RunStep {
  int64_t step = 0;
  std::map<std::string, double> scalars;
  std::vector<std::vector<int64_t>> expert_load;
};

// Used when the environment differs. Rounding differences (another thread count, CPU or BLAS)
// stay at rounding level for the first steps, then training's own chaos amplifies them to the
// size of a seed change (docs/ci.md "Tolerances" has the measurement). So the first early_steps
// are compared step by step with tight `early` bounds, and later steps as means over windows of
// `window` steps with loose `late` bounds. A bound: |actual - golden| <= rtol * max(|golden|, 1e-6)
// for the LM and MTP losses and their total (loss_rtol), the balance and z losses (aux_loss_rtol:
// they follow the routing, which drifts first) and the gradient norm; an expert's share of the
// layer's routed tokens may move by load_atol.
struct GoldenBounds {
  double loss_rtol = 0, aux_loss_rtol = 0, grad_norm_rtol = 0, load_atol = 0;
};
struct GoldenTolerance {
  int64_t early_steps = 0;
  GoldenBounds early;
  int64_t window = 1;
  GoldenBounds late;
};
// The measured defaults per compute dtype.
GoldenTolerance default_golden_tolerance(const std::string& compute_dtype);

struct GoldenRecord {
  RunEnvironment environment;
  std::string config_sha256;
  std::vector<std::pair<std::string, std::string>> config;  // every key of the effective config
  std::vector<std::string> command;                         // how it was recorded (informational)
  GoldenTolerance tolerance;
  std::vector<RunStep> steps;
};

// Writes atomically (temporary file + rename). Throws std::runtime_error naming the file.
void write_golden(const std::string& path, const GoldenRecord& record);
// Throws ConfigError naming the file and the key that is missing or malformed.
GoldenRecord read_golden(const std::string& path);

enum class GoldenMode { automatic, exact, tolerance };
// "auto" | "exact" | "tolerance"; throws ConfigError naming --golden-mode otherwise.
GoldenMode parse_golden_mode(const std::string& text);

struct GoldenCheck {
  std::string name;   // "steps", "loss/lm", "grad_norm", "expert_load/layer1", ...
  bool passed = true;
  int64_t first_step = 0;  // first step of the first comparison out of tolerance (0: none)
  std::string where;       // that comparison: "step 4" or "steps 21-30 (means)"
  std::string message;     // why it failed, or what was compared
};

struct GoldenReport {
  bool exact = false;               // bit-identical comparison (otherwise: the tolerances)
  std::string mode_reason;          // why that mode was chosen
  std::vector<std::string> config_differences;  // "key: golden → run" for numeric-relevant keys
  std::vector<GoldenCheck> checks;
  bool passed() const;
  // One line: the first diverging step and metric (earliest over all checks), or "passed ...".
  std::string summary() const;
};

// Compares a run against the golden record, metric by metric, step by step.
GoldenReport compare_golden(const GoldenRecord& golden, const GoldenRecord& run, GoldenMode mode);

// checkpoint.* and logging.*: output locations, which change no number (left out of golden files,
// of their config comparison and of the run's config hash).
bool is_output_config_key(const std::string& key);

// Keys whose values differ (output keys are left out).
std::vector<std::string> config_differences(const std::vector<std::pair<std::string, std::string>>& golden,
                                            const std::vector<std::pair<std::string, std::string>>& run);

}  // namespace latentmoe::train
