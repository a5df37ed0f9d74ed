// The trainer, composed of components built from their config sections: data loaders, model,
// AdamW, LR schedule, expert balancer, checkpointer and metrics. Parallelism is applied from
// src/parallel/ (data parallel reductions, expert-parallel dispatch); the model stays single-device.
#pragma once

#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "latentmoe/config/config.h"
#include "latentmoe/data/loader.h"
#include "latentmoe/data/prefetch.h"
#include "latentmoe/model/deepseek_v3.h"
#include "latentmoe/parallel/communicator.h"
#include "latentmoe/parallel/parallelize.h"
#include "latentmoe/train/balancer.h"
#include "latentmoe/train/batch_schedule.h"
#include "latentmoe/train/checkpoint.h"
#include "latentmoe/train/fault_check.h"
#include "latentmoe/train/metrics.h"
#include "latentmoe/train/optimizer.h"
#include "latentmoe/train/schedule.h"
#include "latentmoe/train/step_profiler.h"

namespace latentmoe::train {

// Exit codes of `latentmoe train` beyond the common ones (README "Exit codes").
enum TrainExit : int {
  kExitInterrupted = 3,  // SIGTERM/SIGINT: the current step finished and a checkpoint was committed
  kExitNonFinite = 4,    // non-finite loss or gradient norm: stopped before the update
  kExitSpikeStopped = 6,  // train.spike_action=stop: a loss spike, stopped before the update
  kExitMachineFault = 7,  // a step that did not reproduce on rerun, or replicas that diverged
};

struct StepRecord {
  int64_t step = 0;  // 1-based optimizer step
  int64_t global_batch = 0;  // sequences in this step (train.batch_ramp)
  double mtp_weight = 0, bias_update_speed = 0;  // MTP lambda and gamma in effect for this step
  double loss = 0, lm = 0, mtp = 0, balance = 0, z = 0, grad_norm = 0, lr = 0;
  bool skipped = false;  // loss spike: update skipped
  double seconds = 0;    // wall time of the step
  double max_violation = 0;  // largest expert-load MaxVio over the MoE layers (0 when skipped)
  std::vector<std::vector<int64_t>> expert_load;  // [MoE layer][expert] tokens routed (empty when skipped)
  bool stop_requested = false;  // distributed: some rank had received SIGTERM/SIGINT by this step's reduction
  std::map<std::string, double> fp8_stats;  // precision.fp8, logged steps: this rank's ops/fp8_stats.h figures
};

// `train --init-from`: refuses a stage whose checkpoint.dir holds the source checkpoint (checked
// before the run directories are locked, so the source run is not touched at all).
void check_stage_directories(const config::Config& cfg, const std::string& init_from);

// Resolves data.paths (default: the bundled corpus, prepared on first use) and data.tokenizer.
std::vector<std::string> resolve_data_paths(const config::Config& cfg);
std::string resolve_tokenizer_path(const config::Config& cfg);

class Trainer {
 public:
  // comm: every rank (nullptr = single process). Rank r trains on its contiguous slice of each
  // global batch; with parallel.ep > 1 it holds only its EP group position's routed experts.
  explicit Trainer(config::Config cfg, parallel::Communicator* comm = nullptr);
  // "auto" (newest committed checkpoint in checkpoint.dir, if any) or a checkpoint directory.
  void resume(const std::string& spec);
  // Starts a new stage from another run's verified checkpoint (`train --init-from`, before run()):
  // the weights, and the AdamW state unless train.init_optimizer=reset. The model may differ only
  // in model.rope_scaling and model.max_position_embeddings (ConfigError listing the other keys).
  // After a resume of this stage's own checkpoint it only checks that they descend from it.
  void init_from(const std::string& checkpoint_dir);
  // Only the weights of a verified checkpoint whose model may differ in the context extension (as
  // init_from; e.g. `eval` of a stage's model at another length). Returns the checkpoint's step.
  int64_t load_weights(const std::string& checkpoint_dir);
  // Trains until train.steps / train.tokens (or a signal / non-finite stop). Returns the exit code.
  int run();
  // Profile some steps of run() (`train --profile N`); not owned, outlives run().
  void set_profiler(StepProfiler* profiler) { profiler_ = profiler; }
  // Mean next-token CE over train.eval_batches validation micro-batches.
  double evaluate();
  // Entropy (nats) of the training split's token distribution: the loss of a unigram model.
  double unigram_entropy() const;
  std::string save_checkpoint();

  model::DeepSeekV3& model() { return model_; }
  const std::vector<StepRecord>& history() const { return history_; }
  int64_t step() const { return step_; }
  int64_t tokens_seen() const { return tokens_seen_; }
  const BatchSchedule& batches() const { return *batches_; }
  const std::optional<std::string>& last_checkpoint() const { return last_checkpoint_; }
  const std::vector<std::string>& saved_checkpoints() const { return saved_checkpoints_; }  // by this process
  const std::optional<double>& last_valid_loss() const { return last_valid_loss_; }

 private:
  StepRecord train_step();
  void log_step(const StepRecord& r, const std::vector<LayerLoadStats>& loads, double seconds);
  // The steps whose line is logged (logging.interval, the first and the last).
  bool logged_step(int64_t step) const;
  std::string trainer_state_json() const;
  void setup_data();          // run_data.cpp: loaders, FIM, batch prefetcher
  void setup_fault_checks();  // trainer_faults.cpp: test hooks, warnings
  // Bad step or bad machine (trainer_faults.cpp). rerun_diagnosis re-executes step r from the same
  // state and returns kExitMachineFault when it differs (0 when it reproduces bit for bit);
  // check_replicas returns kExitMachineFault when replicas diverged (0 when consistent).
  // Loss z-score over the window above train.spike_zscore (z and mean returned when a spike).
  bool is_spike(const StepRecord& r, double* z = nullptr, double* mean = nullptr) const;
  int rerun_diagnosis(const StepRecord& r, const std::string& what);
  int check_replicas();
  std::string describe_step_samples() const;
  // trainer_checkpoint.cpp: the model tensors this rank holds, from a loaded checkpoint.
  void load_model_tensors(const CheckpointData& data, const std::string& path);
  // A verified checkpoint, its config and trainer state, with its weights loaded into the model
  // after the stage-compatibility check; `option` names the source in errors.
  struct StageSource {
    CheckpointData data;
    config::Config config;
    nlohmann::json state;
  };
  StageSource load_stage_weights(const std::string& checkpoint_dir, const char* option);
  // This rank's micro-batches of the step that starts after `consumed` samples.
  std::vector<data::BatchPrefetcher::Request> step_requests(int64_t consumed, int64_t global_batch) const;
  int64_t accum_steps(int64_t global_batch) const;  // micro-batches per step on one rank
  void apply_test_faults_after_update();

  config::Config cfg_;
  parallel::Communicator* comm_ = nullptr;
  int rank_ = 0, world_ = 1;
  std::unique_ptr<BatchSchedule> batches_;  // the global batch of each step, the run's length
  std::vector<std::string> data_paths_;
  std::unique_ptr<data::DataLoader> train_data_, valid_data_;
  std::unique_ptr<data::BatchPrefetcher> prefetcher_;  // data.num_workers > 0 (destroyed before the loaders)
  model::DeepSeekV3 model_{nullptr};
  std::unique_ptr<AdamW> optimizer_;
  // What this rank holds and how it synchronizes (parallel/parallelize.h; one process too).
  std::unique_ptr<parallel::Parallelism> parallel_;
  std::unique_ptr<LrSchedule> schedule_;
  std::unique_ptr<ExpertBalancer> balancer_;
  std::unique_ptr<Checkpointer> checkpointer_;
  std::unique_ptr<MetricsLogger> metrics_;
  StepProfiler* profiler_ = nullptr;
  int64_t step_ = 0, tokens_seen_ = 0, consumed_samples_ = 0, spikes_skipped_ = 0;
  std::vector<double> loss_window_;
  std::vector<int64_t> idle_steps_;  // per (MoE layer, expert): consecutive steps without tokens
  std::vector<std::string> moe_layer_names_;  // e.g. "model.layers.2", "mtp.0.block" 
  std::vector<StepRecord> history_;
  std::optional<std::string> last_checkpoint_;
  std::vector<std::string> saved_checkpoints_;
  std::optional<double> last_valid_loss_;
  nlohmann::json lineage_;  // the stages this run descends from (trainer_checkpoint.cpp)
  double train_flops_per_token_ = 0;
  bool bf16_ = false;
  ops::fp8::Recipe fp8_;  // precision.fp8
  int64_t ignored_label_ = -1;  // FIM's pad token (left out of the loss), -1 without FIM
  StepFingerprint fingerprint_;  // of the last train_step (train.spike_action=rerun)
  // Test hooks (LATENTMOE_TEST_SPIKE=STEP:RANK:once|always, LATENTMOE_TEST_CORRUPT_REPLICA=STEP:RANK).
  struct TestFault {
    int64_t step = -1;
    int rank = 0;
    bool always = false;
    bool fired = false;
  };
  TestFault test_spike_, test_corrupt_replica_;
};

}  // namespace latentmoe::train
