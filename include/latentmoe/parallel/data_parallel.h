// Data parallelism applied to a model written for one device. Replicated ("dense") parameters
// are reduced over every rank; with expert parallelism the routed experts' parameters are
// reduced over the expert-data-parallel group that replicates them. Gradients go into buckets
// (parallel.bucket_size_mb, in reverse registration order ≈ the order backward produces them)
// whose reduction starts from gradient hooks during the last micro-batch's backward, so it
// overlaps with the rest of the backward; buckets launch strictly in order on every rank.
//
// ZeRO-1 (parallel.zero_stage 1): each bucket is split into equal chunks, one per rank of its
// group; gradients are reduce-scattered, each rank runs AdamW on its chunk only (the moments
// exist only there) and the updated parameters are all-gathered.
#pragma once

#include <torch/types.h>

#include <map>
#include <memory>
#include <string>
#include <vector>

#include "latentmoe/parallel/communicator.h"

namespace latentmoe::parallel {

struct DataParallelOptions {
  bool zero1 = false;
  int64_t bucket_bytes = 25 << 20;
  // Expert buckets become ready at rank-dependent points of the backward (routing differs), so
  // launching them from hooks interleaves the expert-DP group's work differently with the EP
  // all-to-alls on each rank: fine for Gloo, a deadlock risk for NCCL, where they wait for the end.
  bool expert_buckets_from_hooks = true;
  // Fingerprint this rank's gradients as they enter each reduction (train.spike_action=rerun:
  // the rank whose own gradients changed on a rerun is the faulty one).
  bool fingerprint_local_gradients = false;
};

struct ReplicatedParam {
  std::string name;
  torch::Tensor param;
  bool expert = false;  // sharded by expert parallelism: reduced over the expert-DP group
};

class DataParallel {
 public:
  // params: the trainable parameters in the optimizer's order. world: every rank. expert_dp: the
  // group replicating this rank's experts; expert_parallel: this rank's EP group (both null
  // when parallel.ep = 1, which makes every parameter dense).
  DataParallel(Communicator& world, Communicator* expert_dp, Communicator* expert_parallel,
               std::vector<ReplicatedParam> params, DataParallelOptions options);
  ~DataParallel();
  DataParallel(const DataParallel&) = delete;
  DataParallel& operator=(const DataParallel&) = delete;

  bool zero1() const { return options_.zero1; }
  // ZeRO-1: per parameter, the [begin, length) of its flattened elements this rank updates.
  std::vector<std::pair<int64_t, int64_t>> owned_ranges() const;

  // Before each micro-batch's backward: the last one arms the gradient hooks.
  void begin_backward(bool last_micro_batch);
  // After the last backward: completes every bucket (launching those whose gradients never all
  // arrived), averages over the world, and sums `scalars` and `counts` over the ranks. A
  // parameter with no gradient on any rank of its group stays without one, as in one process.
  // Under ZeRO-1 only the owned ranges of the gradients are meaningful afterwards.
  void finish_gradients(torch::Tensor& scalars, torch::Tensor& counts);
  // Squared global gradient norm, each tensor counted once (collective).
  double grad_norm_squared();
  // ZeRO-1: after the owners' update, every rank receives every parameter of its groups.
  void gather_parameters();
  // Full optimizer moments ("exp_avg.<name>", "exp_avg_sq.<name>") of this rank's parameters,
  // assembled under ZeRO-1 (collective) from `state`, the optimizer's own (zeros outside the
  // owned ranges), plus its "step".
  std::map<std::string, torch::Tensor> full_optimizer_state(std::map<std::string, torch::Tensor> state);

  // Fingerprint of this rank's (unreduced) gradients of the last armed backward, in bucket
  // launch order (the same on every execution of the same step).
  uint64_t local_gradient_fingerprint() const { return local_fingerprint_; }

  // Bytes this rank has sent into gradient/parameter collectives so far (payload, not protocol).
  int64_t bytes_reduced() const { return bytes_reduced_; }

 private:
  struct Slot {
    size_t param;  // index into params_
    int64_t offset, numel;
  };
  struct Bucket {
    std::vector<Slot> slots;
    int64_t numel = 0, padded = 0;  // padded: a multiple of the group size
    torch::Tensor buffer;           // [padded] gradients (summed in place, or reduce-scatter input)
    torch::Tensor chunk;            // ZeRO-1: [padded / group size] this rank's reduced chunk
    size_t ready = 0;
    std::unique_ptr<PendingCollective> pending;
  };
  struct Group {  // the dense parameters (world) or the expert parameters (expert-DP group)
    Communicator* comm = nullptr;
    std::vector<Bucket> buckets;
    size_t next_launch = 0;
    std::vector<size_t> params;  // indices into params_
  };

  void build_buckets(Group& group);
  void on_gradient(size_t param, const torch::Tensor& grad);
  void launch_ready(Group& group, bool force);
  void launch(Group& group, Bucket& bucket);
  void complete(Group& group, const torch::Tensor& presence);
  Group& group_of(size_t param) { return param_group_[param] == 0 ? dense_ : expert_; }

  Communicator& world_;
  Communicator* expert_parallel_;
  std::vector<ReplicatedParam> params_;
  DataParallelOptions options_;
  Group dense_, expert_;
  std::vector<int> param_group_;             // 0 dense, 1 expert
  std::vector<std::pair<size_t, size_t>> where_;  // param -> (bucket, slot)
  std::vector<char> seen_;                   // gradient arrived in the armed backward
  std::vector<uint64_t> hook_handles_;
  bool armed_ = false;
  int64_t bytes_reduced_ = 0;
  uint64_t local_fingerprint_ = 0;
};

}  // namespace latentmoe::parallel
