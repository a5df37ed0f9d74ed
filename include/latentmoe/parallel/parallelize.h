// The one parallelization entry point: from the config and the communicator, what this rank holds
// of the single-device model and how it synchronizes — its routed experts, the expert dispatch,
// the parameters' roles (from the model's structure), gradient reduction, the gradient norm, the
// ZeRO-1 optimizer ranges and state gathering, which tensors it writes into a checkpoint, and
// agreement between ranks. One process gets the same interface with nothing to synchronize, so
// the trainer has no layout branches.
#pragma once

#include <torch/types.h>

#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "latentmoe/config/config.h"
#include "latentmoe/model/deepseek_v3.h"
#include "latentmoe/parallel/communicator.h"
#include "latentmoe/parallel/data_parallel.h"
#include "latentmoe/parallel/expert_parallel.h"
#include "latentmoe/parallel/layout.h"

namespace latentmoe::parallel {

// What a replica check compares: a group of ranks that must hold identical copies of the
// parameters selected by `holds`.
struct ReplicaGroup {
  Communicator* comm;
  std::string what;  // for messages: "the replicated parameters", "the routed experts of ..."
  std::function<bool(const std::string& parameter)> holds;
};

class Parallelism {
 public:
  // comm: every rank; nullptr for one process. Throws ConfigError for a layout that does not divide.
  Parallelism(const config::Config& cfg, Communicator* comm);
  ~Parallelism();
  Parallelism(const Parallelism&) = delete;
  Parallelism& operator=(const Parallelism&) = delete;

  int rank() const { return rank_; }
  int world_size() const { return world_; }
  Communicator* world() const { return comm_; }

  // What this rank builds: its routed experts; every tensor seeded by (seed, its global name).
  model::ModelBuild model_build(uint64_t seed) const;
  // Wires the built model: expert dispatch, and the reduction of `trainable` (the optimizer's
  // parameters, in its order). Roles come from the model's structure (its routed experts).
  void attach(model::DeepSeekV3Impl& model, const std::vector<std::pair<std::string, torch::Tensor>>& trainable,
              bool fingerprint_local_gradients);
  // ZeRO-1: per trainable parameter, the [begin, length) this rank updates; empty: all of them.
  std::vector<std::pair<int64_t, int64_t>> optimizer_ranges() const;
  bool zero1() const;
  std::string describe() const;  // one log line

  // The step: before each micro-batch's backward; after the last, the gradients reduced and
  // `scalars` (and `counts`) summed over the ranks, then divided by the world for the means.
  void begin_backward(bool last_micro_batch);
  void finish_gradients(torch::Tensor& scalars, torch::Tensor& counts);
  // Squared global gradient norm, every tensor once over all ranks; squared_norm computes one
  // tensor's (the trainer's fast kernel) where the reduction does not.
  double grad_norm_squared(const torch::nn::Module& model,
                           const std::function<double(const torch::Tensor&)>& squared_norm);
  // Fingerprint of this rank's unreduced gradients of the last step (train.spike_action=rerun).
  uint64_t local_gradient_fingerprint(const torch::nn::Module& model,
                                      const std::function<uint64_t(const torch::Tensor&, uint64_t)>& fingerprint);
  // After the optimizer step: ZeRO-1's all-gather of the updated parameters.
  void after_update();
  // Bytes this rank sent since the last call, as logged: "dp/reduce_bytes", "ep/all_to_all_bytes".
  void add_traffic(std::map<std::string, double>& scalars);

  // The optimizer state a checkpoint holds for this rank's parameters (collective under ZeRO-1):
  // `local` is the optimizer's own state().
  std::map<std::string, torch::Tensor> full_optimizer_state(std::map<std::string, torch::Tensor> local);
  // Which of `model_state`'s tensors (this rank's, in order) this rank writes, so that every
  // tensor is written once over all ranks.
  std::vector<bool> checkpoint_writes(const std::vector<std::pair<std::string, int64_t>>& tensors) const;
  // A decision every rank takes alike: `reduced` (already agreed over the ranks) when there are
  // several, the process's own `local_now` when alone (nobody to wait for).
  bool decision(bool reduced, bool local_now) const { return comm_ ? reduced : local_now; }
  // True when every rank passes the same value (collective); one process: true.
  bool all_agree(int64_t value, const std::string& what);
  // The groups whose copies must be identical (empty for one process).
  std::vector<ReplicaGroup> replica_groups() const;
  bool holds_replicas() const { return world_ > 1; }

 private:
  bool is_expert(const std::string& parameter) const { return experts_.count(parameter) > 0; }

  Communicator* comm_;
  int rank_ = 0, world_ = 1;
  std::optional<ParallelLayout> layout_;
  DataParallelOptions dp_options_;
  std::unique_ptr<Communicator> ep_comm_, expert_dp_comm_;              // parallel.ep > 1
  std::unique_ptr<ExpertParallelDispatcher> expert_dispatcher_;          // parallel.ep > 1
  std::unique_ptr<DataParallel> data_parallel_;                          // several ranks
  std::set<std::string> experts_;                                        // routed-expert parameters held
  int64_t all_to_all_logged_ = 0, reduce_logged_ = 0;
};

}  // namespace latentmoe::parallel
