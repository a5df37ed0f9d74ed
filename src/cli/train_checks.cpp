// Golden checks, expectations and machine-readable results of a training run.
#include "train_checks.h"

#include "latentmoe/train/batch_schedule.h"

#include <fmt/format.h>
#include <fmt/ranges.h>
#include <sys/resource.h>

#include <algorithm>
#include <ATen/Parallel.h>
#include <cmath>
#include <filesystem>

#include "latentmoe/config/loader.h"
#include "latentmoe/train/trainer.h"
#include "latentmoe/util/atomic_file.h"
#include "latentmoe/util/hash.h"
#include "latentmoe/util/host.h"
#include "latentmoe/util/log.h"
#include "latentmoe/util/runtime_info.h"
#include "latentmoe/version.h"

namespace latentmoe::cli {

namespace {

// Whether either side of the expectation is a metric that `wanted` accepts.
template <typename Predicate>
bool names_metric(const train::Expectation& e, Predicate wanted) {
  for (const auto* operand : {&e.lhs, &e.rhs}) {
    const auto* name = std::get_if<std::string>(operand);
    if (name && wanted(*name)) return true;
  }
  return false;
}

bool needs_validation(const train::Expectation& e) {
  return names_metric(e, [](const std::string& m) { return m.starts_with("valid_") || m == "entropy_gap"; });
}

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  const size_t n = v.size();
  return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

std::vector<std::pair<std::string, std::string>> numeric_config(const config::Config& cfg) {
  std::vector<std::pair<std::string, std::string>> out;
  for (auto& kv : config::config_key_values(cfg)) {
    if (!train::is_output_config_key(kv.first)) out.push_back(std::move(kv));
  }
  return out;
}

// What the run trained on: every dataset's index and size, and the tokenizer.
std::string data_fingerprint(const config::Config& cfg) {
  std::string text;
  for (const std::string& prefix : train::resolve_data_paths(cfg)) {
    text += sha256_file_hex(prefix + ".idx") + ":" + std::to_string(std::filesystem::file_size(prefix + ".bin")) + ";";
  }
  text += sha256_file_hex(train::resolve_tokenizer_path(cfg));
  return sha256_hex(text.data(), text.size());
}

// A file that training would only write at the end is checked now, so a typo costs no run.
void ensure_writable(const std::string& path, const char* option) {
  if (path.empty()) return;
  if (std::filesystem::is_directory(path)) throw ConfigError(fmt::format("{} {}: is a directory; give a file name", option, path));
  const std::string probe = path + ".probe";
  try {
    write_text_file_atomically(probe, "");
    std::filesystem::remove(probe);
  } catch (const std::exception& e) {
    throw ConfigError(fmt::format("{} {}: cannot write there ({})", option, path, e.what()));
  }
}

std::vector<train::RunStep> run_steps(const train::Trainer& trainer) {
  std::vector<train::RunStep> steps;
  for (const train::StepRecord& r : trainer.history()) {
    steps.push_back({.step = r.step,
                     .scalars = {{"loss/total", r.loss}, {"loss/lm", r.lm}, {"loss/mtp", r.mtp},
                                 {"loss/balance", r.balance}, {"loss/z", r.z}, {"grad_norm", r.grad_norm}},
                     .expert_load = r.expert_load});
  }
  return steps;
}

}  // namespace

void TrainChecks::check_fresh_start(int64_t resumed_step) const {
  if (!args_.golden_file.empty() && resumed_step != 0) {
    throw ConfigError(fmt::format("--golden {}: a golden run is compared from step 1, but this run resumes at step {}; use "
                                  "an empty checkpoint.dir and no --resume", args_.golden_file, resumed_step));
  }
}

bool TrainChecks::needs_unigram_entropy() const {
  return std::any_of(expectations_.begin(), expectations_.end(), [](const train::Expectation& e) {
    return names_metric(e, [](const std::string& m) { return m == "unigram_entropy" || m == "entropy_gap"; });
  });
}

void TrainCheckArgs::add_to(CLI::App& command) {
  command.add_option("--golden", golden_file,
                     "Check this run's per-step losses, gradient norms and expert loads against a golden file "
                     "(docs/ci.md); with --golden-write, record it instead");
  command.add_flag("--golden-write", golden_write, "Record the --golden file from this run (which must train from step 1)");
  command.add_option("--golden-mode", golden_mode,
                     "auto (default: exact when the environment matches the golden run's, else its tolerances) | exact | "
                     "tolerance");
  std::string metrics;
  for (const auto& m : train::expectation_metrics()) metrics += (metrics.empty() ? "" : ", ") + m.name;
  command.add_option("--expect", expect,
                     "Assertion over the final metrics, e.g. 'valid_loss<5.5' or 'valid_loss<unigram_entropy' (repeatable; "
                     "exit 5 when one fails). Metrics: " + metrics);
  command.add_option("--report", report_file, "Write a JSON summary of the run (config hash, versions, losses, throughput, "
                                              "peak RSS, checkpoints, checks)");
  command.add_option("--junit", junit_file, "Write a JUnit XML file: one test case for training, each expectation and each "
                                            "golden check");
}

TrainChecks::TrainChecks(const TrainCheckArgs& args, const ConfigArgs& config_args, const config::Config& cfg,
                         int world_size)
    : args_(args), cfg_(cfg), start_(std::chrono::steady_clock::now()) {
  for (const std::string& text : args_.expect) expectations_.push_back(train::parse_expectation(text));
  if (!args_.golden_mode.empty() && args_.golden_file.empty()) throw ConfigError("--golden-mode needs --golden FILE");
  golden_mode_ = train::parse_golden_mode(args_.golden_mode.empty() ? "auto" : args_.golden_mode);
  if (args_.golden_write && args_.golden_file.empty()) throw ConfigError("--golden-write needs --golden FILE (the file to record)");
  if (!args_.golden_file.empty() && !args_.golden_write) golden_ = train::read_golden(args_.golden_file);
  ensure_writable(args_.report_file, "--report");
  ensure_writable(args_.junit_file, "--junit");
  if (args_.golden_write) ensure_writable(args_.golden_file, "--golden");
  const bool has_validation = cfg.data.valid_fraction > 0 && cfg.train.eval_batches > 0;
  for (const train::Expectation& e : expectations_) {
    if (needs_validation(e) && !has_validation) {
      throw ConfigError(fmt::format("--expect '{}' needs a validation loss, but data.valid_fraction={} and "
                                    "train.eval_batches={}: set both > 0",
                                    e.text, cfg.data.valid_fraction, cfg.train.eval_batches));
    }
  }
  train::RunSummary& s = summary_;
  s.command = {"latentmoe", "train", "--config", config_args.config};
  for (const std::string& o : config_args.overrides) {
    if (!train::is_output_config_key(o)) s.command.insert(s.command.end(), {"--set", o});
  }
  s.config_name = cfg.name;
  s.config_source = config_args.config;
  std::string numeric;
  for (const auto& [key, value] : numeric_config(cfg)) numeric += key + "=" + value + "\n";
  s.config_sha256 = sha256_hex(numeric.data(), numeric.size());
  s.environment = {.latentmoe_version = kVersion, .torch_version = torch_version(), .compiler = compiler_id(),
                   .cpu_model = cpu_model_name(), .cpu_capability = cpu_capability(),
                   .compute_dtype = cfg.precision.compute_dtype, .threads = at::get_num_threads(), .world_size = world_size,
                   .data = ""};  // fingerprinted after training, when the data is surely prepared
  s.started_at = utc_now_iso8601();
  s.hostname = host_name();
  s.target_steps = train::BatchSchedule(cfg.train).total_steps();
  s.golden_file = args_.golden_file;
}

int TrainChecks::finish(const train::Trainer& trainer, int training_exit, const std::string& error,
                        std::optional<double> valid_loss, std::optional<double> unigram_entropy) {
  train::RunSummary& s = summary_;
  s.error = error;
  const auto& history = trainer.history();
  s.first_step = history.empty() ? trainer.step() : history.front().step;
  s.final_step = trainer.step();
  s.tokens = trainer.tokens_seen();
  s.checkpoints = trainer.saved_checkpoints();
  auto& m = s.metrics;
  m["steps"] = static_cast<double>(history.size());
  m["final_step"] = static_cast<double>(trainer.step());
  m["tokens"] = static_cast<double>(trainer.tokens_seen());
  m["wall_s"] = std::chrono::duration<double>(std::chrono::steady_clock::now() - start_).count();
  rusage usage{};
  if (::getrusage(RUSAGE_SELF, &usage) == 0) m["peak_rss_mb"] = static_cast<double>(usage.ru_maxrss) / 1024.0;  // KiB
  if (!history.empty()) {
    const train::StepRecord& last = history.back();
    m["loss"] = last.loss, m["lm_loss"] = last.lm, m["mtp_loss"] = last.mtp, m["balance_loss"] = last.balance;
    m["z_loss"] = last.z, m["grad_norm"] = last.grad_norm, m["max_violation"] = last.max_violation;
    std::vector<double> times;
    int64_t skipped = 0;
    std::vector<double> rates;  // tokens/s of each step (the batch may ramp)
    for (size_t i = history.size() > 1 ? 1 : 0; i < history.size(); ++i) {
      times.push_back(history[i].seconds);
      rates.push_back(static_cast<double>(history[i].global_batch * cfg_.train.seq_len) / history[i].seconds);
    }
    for (const auto& r : history) skipped += r.skipped;
    m["step_time_s"] = median(times);
    m["tokens_per_s"] = median(rates);
    m["skipped_steps"] = static_cast<double>(skipped);
  }
  if (unigram_entropy) m["unigram_entropy"] = *unigram_entropy;
  if (valid_loss) {
    m["valid_loss"] = *valid_loss;
    m["valid_perplexity"] = std::exp(*valid_loss);
    if (unigram_entropy) m["entropy_gap"] = *unigram_entropy - *valid_loss;
  }

  for (const train::Expectation& e : expectations_) {
    s.expectations.push_back(train::evaluate_expectation(e, m));
    if (s.expectations.back().passed) {
      LMOE_INFO("expectation {}", s.expectations.back().message);
    } else {
      LMOE_ERROR("expectation {}", s.expectations.back().message);
    }
  }
  train::GoldenRecord run{.environment = s.environment,
                          .config_sha256 = s.config_sha256,
                          .config = numeric_config(cfg_),
                          .command = s.command,
                          .tolerance = train::default_golden_tolerance(cfg_.precision.compute_dtype),
                          .steps = run_steps(trainer)};
  try {
    s.environment.data = run.environment.data = data_fingerprint(cfg_);
  } catch (const std::exception& e) {
    LMOE_WARN("cannot fingerprint the training data for the golden check: {}", e.what());
    s.environment.data = run.environment.data = "unknown";
  }
  if (golden_) {
    s.golden = train::compare_golden(*golden_, run, golden_mode_);
    for (const std::string& d : s.golden->config_differences) LMOE_WARN("golden check: config differs from the golden run: {}", d);
    if (s.golden->passed()) {
      LMOE_INFO("{} against {}", s.golden->summary(), args_.golden_file);
    } else {
      LMOE_ERROR("{} (golden file {})", s.golden->summary(), args_.golden_file);
    }
  } else if (args_.golden_write) {
    if (training_exit != kExitOk) {
      LMOE_ERROR("golden file {} not written: training ended with exit code {}", args_.golden_file, training_exit);
    } else if (run.steps.empty()) {  // a resumed run was refused before training (check_fresh_start)
      LMOE_ERROR("golden file {} not written: the run trained no steps", args_.golden_file);
      training_exit = kExitFailure;
      s.error = "golden file not written: the run trained no steps";
    } else {
      try {
        train::write_golden(args_.golden_file, run);
        s.golden_written = true;
      } catch (const std::exception& e) {
        LMOE_ERROR("golden file {} not written: {}", args_.golden_file, e.what());
        training_exit = kExitFailure;
        s.error = fmt::format("golden file not written: {}", e.what());
      }
      const train::GoldenTolerance& t = run.tolerance;
      if (s.golden_written) LMOE_INFO("golden file written: {} ({} steps; for other environments: steps 1-{} within loss {:.0e}, grad norm "
                "{:.0e}, expert load share {:.0e}; later means over {} steps within {:.0e}, {:.0e}, {:.0e})",
                args_.golden_file, run.steps.size(), t.early_steps, t.early.loss_rtol, t.early.grad_norm_rtol,
                t.early.load_atol, t.window, t.late.loss_rtol, t.late.grad_norm_rtol, t.late.load_atol);
    }
  }
  train::finish_summary(s, training_exit);
  if (!args_.report_file.empty()) {
    train::write_report_json(args_.report_file, s);
    LMOE_INFO("run report written: {}", args_.report_file);
  }
  if (!args_.junit_file.empty()) {
    train::write_junit_xml(args_.junit_file, s);
    LMOE_INFO("JUnit results written: {}", args_.junit_file);
  }
  if (s.status == "failed") {
    std::vector<std::string> failed;
    for (const auto& e : s.expectations) {
      if (!e.passed) failed.push_back(e.message);
    }
    if (s.golden && !s.golden->passed()) failed.push_back(s.golden->summary());
    std::fprintf(stderr, "latentmoe: check failed: %s\n", fmt::format("{}", fmt::join(failed, "; ")).c_str());
  }
  return s.exit_code;
}

}  // namespace latentmoe::cli
