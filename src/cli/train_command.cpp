// `latentmoe train` and `latentmoe eval`.
#include <fmt/format.h>
#include <fmt/ranges.h>

#include <cmath>
#include <cstring>
#include <filesystem>
#include <iostream>

#include "commands.h"
#include "train_checks.h"
#include "latentmoe/train/trainer.h"
#include "latentmoe/config/loader.h"
#include "latentmoe/config/validate.h"
#include "latentmoe/util/directory_lock.h"
#include "latentmoe/util/host.h"
#include "latentmoe/util/log.h"

namespace latentmoe::cli {

namespace {
// One run per checkpoint.dir and logging.dir: rank 0 holds both locks for the whole job, and every
// rank learns whether it got them, so a refused job stops on all ranks at once.
std::vector<std::unique_ptr<DirectoryLock>> lock_run_directories(const config::Config& cfg, parallel::Communicator* comm,
                                                                 int rank) {
  std::vector<std::unique_ptr<DirectoryLock>> locks;
  std::string error;
  if (rank == 0) {
    try {
      locks.push_back(std::make_unique<DirectoryLock>(cfg.checkpoint.dir, "checkpoint.dir"));
      namespace fs = std::filesystem;
      if (fs::weakly_canonical(cfg.logging.dir) != fs::weakly_canonical(cfg.checkpoint.dir)) {
        locks.push_back(std::make_unique<DirectoryLock>(cfg.logging.dir, "logging.dir"));
      }
    } catch (const std::exception& e) {
      error = e.what();
    }
  }
  if (comm) {
    at::Tensor refused = at::full({1}, error.empty() ? 0.0 : 1.0, at::kDouble);
    comm->all_reduce_sum(refused, "run directory lock agreement all-reduce");
    if (rank != 0 && refused.item<double>() > 0) {
      throw std::runtime_error(fmt::format("rank {}: rank 0 could not lock checkpoint.dir {} or logging.dir {} (its "
                                           "message says why)", rank, cfg.checkpoint.dir, cfg.logging.dir));
    }
  }
  if (!error.empty()) throw std::runtime_error(error);
  return locks;
}
// Hosts started with different configs would train different models in lockstep, or hang in
// mismatched collectives: every rank compares its effective config with rank 0's before any work.
void check_same_config(const config::Config& effective, parallel::Communicator& comm) {
  config::Config cfg = effective;  // where and how much a host logs may differ
  cfg.logging = config::LoggingConfig{};
  cfg.data.num_workers = 1;
  const std::string mine = config::dump_config_yaml(cfg);
  const int world = comm.world_size();
  at::Tensor length = at::full({1}, static_cast<int64_t>(mine.size()), at::kLong), lengths = at::empty({world}, at::kLong);
  comm.all_gather(lengths, length, "config agreement all-gather");
  const int64_t longest = lengths.max().item<int64_t>();
  at::Tensor bytes = at::zeros({longest}, at::kByte), all = at::empty({world * longest}, at::kByte);
  std::memcpy(bytes.data_ptr(), mine.data(), mine.size());
  comm.all_gather(all, bytes, "config agreement all-gather");
  const auto text_of = [&](int r) {
    return std::string(reinterpret_cast<const char*>(all.data_ptr<uint8_t>()) + r * longest,
                       static_cast<size_t>(lengths[r].item<int64_t>()));
  };
  const std::string reference = text_of(0);
  std::vector<int> differing;
  for (int r = 1; r < world; ++r) {
    if (text_of(r) != reference) differing.push_back(r);
  }
  if (differing.empty()) return;
  std::string keys;
  if (mine != reference) {
    for (const auto& d : config::differing_keys(config::load_config_text(reference, "rank 0's config"), cfg)) {
      keys += fmt::format("\n  {}: {} on rank 0, {} here", d.key, d.from, d.to);
    }
  }
  throw ConfigError(fmt::format("rank {} (host {}): rank{} {} started with another config than rank 0; start every host "
                                "with the same --config and --set (compare `latentmoe config --dump` on each){}",
                                comm.rank(), host_name(), differing.size() > 1 ? "s" : "", fmt::join(differing, ", "),
                                keys));
}
}  // namespace

void add_train_command(CLI::App& app, int& exit_code) {
  auto* cmd = app.add_subcommand("train", "Train a model (one process, or one per rank under torchrun: see the README)");
  auto args = std::make_shared<ConfigArgs>();
  auto resume = std::make_shared<std::string>();
  auto init_from = std::make_shared<std::string>();
  auto check_args = std::make_shared<TrainCheckArgs>();
  args->add_to(*cmd);
  cmd->add_option("--resume", *resume, "'auto' (newest committed checkpoint in checkpoint.dir) or a checkpoint directory");
  cmd->add_option("--init-from", *init_from,
                  "Start a new stage from another run's committed checkpoint: its weights (and AdamW state, "
                  "train.init_optimizer), this config's sequence length, rotary scaling, batch and schedule. With "
                  "--resume auto, a stage that already has checkpoints continues from them instead");
  auto profile_steps = std::make_shared<int64_t>(0);
  cmd->add_option("--profile", *profile_steps,
                  "Profile N steps after one warm-up step: a Chrome trace and the step time by category in "
                  "<logging.dir>/profile/ (also printed)");
  check_args->add_to(*cmd);
  cmd->callback([args, resume, init_from, check_args, profile_steps, &exit_code] {
    // Environment first: a bad RANK/WORLD_SIZE fails before any rendezvous or heavy work.
    const parallel::DistributedEnv env = parallel::distributed_env_from_environment();
    config::Config cfg = config::load_config(args->config, args->overrides);
    config::validate_config(cfg, env.world_size);
    log_init({.level = cfg.logging.level, .file = cfg.logging.file, .rank = env.distributed() ? env.rank : -1,
              .world_size = env.world_size});
    TrainChecks checks(*check_args, *args, cfg, env.world_size);  // malformed checks exit 2 before any heavy work
    const bool checked = env.rank == 0 && check_args->any();
    std::unique_ptr<parallel::Communicator> comm;
    if (env.distributed()) {
      comm = parallel::Communicator::create(env, cfg.parallel.backend, std::chrono::seconds(cfg.parallel.timeout_s));
    }
    if (!init_from->empty()) {
      if (!resume->empty() && *resume != "auto") {
        throw ConfigError(fmt::format("--init-from {} with --resume {}: a stage starts from --init-from, or continues its "
                                      "own checkpoints with --resume auto; --resume DIR would ignore one of them",
                                      *init_from, *resume));
      }
      if (!check_args->golden_file.empty()) {
        throw ConfigError("--golden checks a run from scratch (its command has no --init-from); run it without --init-from");
      }
      train::check_stage_directories(cfg, *init_from);
    }
    if (comm) check_same_config(cfg, *comm);
    const auto locks = lock_run_directories(cfg, comm.get(), env.rank);
    train::Trainer trainer(cfg, comm.get());
    if (!resume->empty()) trainer.resume(*resume);
    if (!init_from->empty()) trainer.init_from(*init_from);
    checks.check_fresh_start(trainer.step());
    std::unique_ptr<train::StepProfiler> profiler;
    if (*profile_steps != 0) {
      const int64_t left = trainer.batches().total_steps() - trainer.step();
      if (*profile_steps < 0 || *profile_steps + 1 > left) {
        throw ConfigError(fmt::format("--profile {}: profiles N >= 1 steps after one warm-up step, so needs {} steps, "
                                      "and this run has {} left; lower --profile or raise train.steps",
                                      *profile_steps, *profile_steps + 1, left));
      }
      profiler = std::make_unique<train::StepProfiler>(
          *profile_steps, std::filesystem::path(cfg.logging.dir) / "profile", env.distributed() ? env.rank : 0);
      trainer.set_profiler(profiler.get());
    }
    const bool report_valid_split = cfg.data.valid_fraction > 0 && cfg.train.eval_batches > 0;
    int training_exit = kExitOk;
    double loss = 0.0;
    std::optional<double> entropy;
    try {
      training_exit = trainer.run();
      // Evaluation is collective under expert parallelism: every rank takes part, rank 0 reports.
      if (training_exit == kExitOk && report_valid_split) {
        loss = trainer.last_valid_loss() ? *trainer.last_valid_loss() : trainer.evaluate();
      }
      if (env.rank == 0 && ((training_exit == kExitOk && report_valid_split) || (checked && checks.needs_unigram_entropy()))) {
        entropy = trainer.unigram_entropy();
      }
    } catch (const std::exception& e) {
      // The report and JUnit file still say what happened; main() then reports the error as usual.
      if (checked) {
        const FailureReport failure = describe_failure(e);
        try {
          checks.finish(trainer, failure.exit_code, failure.message, std::nullopt, std::nullopt);
        } catch (const std::exception& also) {
          LMOE_ERROR("could not write the run report: {}", also.what());
        }
      }
      throw;
    }
    const bool report_valid = training_exit == kExitOk && report_valid_split;
    exit_code = training_exit;
    if (env.rank != 0) return;  // every rank holds the same numbers; rank 0 reports them
    if (report_valid) {
      LMOE_INFO("validation loss {:.4f} nats (perplexity {:.1f}) vs unigram entropy {:.4f} nats of the training tokens: "
                "{:.2f} nats {}", loss, std::exp(loss), *entropy, std::abs(*entropy - loss), loss <= *entropy ? "below" : "above");
    }
    if (trainer.last_checkpoint()) LMOE_INFO("latest checkpoint: {}", *trainer.last_checkpoint());
    if (checked) {
      const std::string why = training_exit == train::kExitInterrupted ? "stopped by a signal after committing a checkpoint"
                              : training_exit == train::kExitNonFinite ? "non-finite loss or gradient norm"
                                                                       : "";
      exit_code = checks.finish(trainer, training_exit, why, report_valid ? std::optional(loss) : std::nullopt, entropy);
    }
  });
}

void add_eval_command(CLI::App& app, int& exit_code) {
  auto* cmd = app.add_subcommand("eval", "Validation loss and perplexity of a checkpoint on the held-out split");
  auto args = std::make_shared<ConfigArgs>();
  auto checkpoint = std::make_shared<std::string>();
  args->add_to(*cmd);
  cmd->add_option("--checkpoint", *checkpoint,
                  "Checkpoint directory (committed), or 'auto' for the newest in checkpoint.dir; its model may differ "
                  "from the config's in the context extension (rotary scaling, max_position_embeddings)")->required();
  cmd->callback([args, checkpoint, &exit_code] {
    const config::Config cfg = args->load();
    log_init({.level = cfg.logging.level, .file = cfg.logging.file});
    config::Config quiet = cfg;
    quiet.logging.jsonl = quiet.logging.tensorboard = false;
    train::Trainer trainer(quiet);
    // Weights only: a stage's model may be scored at another length and rotary scaling than it was trained with.
    std::string path = *checkpoint;
    if (path == "auto") {
      const auto latest = train::Checkpointer(cfg.checkpoint.dir, cfg.checkpoint.keep_last).latest();
      if (!latest) throw ConfigError(fmt::format("--checkpoint auto: no committed checkpoint in checkpoint.dir {}", cfg.checkpoint.dir));
      path = *latest;
    }
    const int64_t step = trainer.load_weights(path);
    const double loss = trainer.evaluate();
    const double entropy = trainer.unigram_entropy();
    std::cout << fmt::format("{{\"valid_loss\": {:.6f}, \"perplexity\": {:.4f}, \"unigram_entropy\": {:.6f}, \"step\": {}, "
                             "\"seq_len\": {}}}\n", loss, std::exp(loss), entropy, step, cfg.train.seq_len);
    exit_code = kExitOk;
  });
}

}  // namespace latentmoe::cli
