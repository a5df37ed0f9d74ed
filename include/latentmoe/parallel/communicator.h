// Process groups from the standard launcher environment (RANK, WORLD_SIZE, LOCAL_RANK,
// MASTER_ADDR, MASTER_PORT; torchrun sets them): TCPStore rendezvous, then torch's own c10d
// backend — gloo on CPU, nccl when CUDA is used — behind one interface, so every parallel
// algorithm is written once. Environment errors are raised before any collective. A failed
// collective names this rank, the operation, its group and the rank(s) that were lost (each rank
// keeps a heartbeat counter in the store; the ones that stopped counting are named).
#pragma once

#include <ATen/core/Tensor.h>

#include <chrono>
#include <memory>
#include <string>
#include <vector>

namespace latentmoe::parallel {

struct DistributedEnv {
  int rank = 0;
  int world_size = 1;
  int local_rank = 0;
  std::string master_addr = "127.0.0.1";
  int master_port = 29500;
  bool distributed() const { return world_size > 1; }
};

// Reads the launcher variables. WORLD_SIZE unset or 1 = single process (nothing else needed).
// Throws ConfigError naming the variable, its value and what is allowed.
DistributedEnv distributed_env_from_environment();

// A collective in flight (returned by the async calls); wait() throws like the blocking calls.
class PendingCollective {
 public:
  virtual ~PendingCollective() = default;
  virtual void wait() = 0;
};

class Communicator {
 public:
  virtual ~Communicator() = default;
  // backend: "auto" (= gloo for CPU training), "gloo" or "nccl" (needs a CUDA build and a GPU per
  // rank: cuda:LOCAL_RANK). timeout bounds every collective and the rendezvous.
  static std::unique_ptr<Communicator> create(const DistributedEnv& env, const std::string& backend,
                                              std::chrono::seconds timeout);

  virtual int rank() const = 0;        // rank inside this group
  virtual int world_size() const = 0;  // ranks in this group
  virtual int global_rank() const = 0;
  virtual const std::string& name() const = 0;  // "world", "ep.0", "edp.1", ...

  // A group over the given GLOBAL ranks (this rank among them, ascending). Every member calls it
  // with the same name and ranks; non-members do not call it. A one-rank group needs no peers.
  virtual std::unique_ptr<Communicator> subgroup(const std::string& name, const std::vector<int>& global_ranks) = 0;

  // In-place sum over the group; `what` names the operation in errors ("gradient all-reduce").
  virtual void all_reduce_sum(at::Tensor& tensor, const std::string& what) = 0;
  virtual std::unique_ptr<PendingCollective> all_reduce_sum_async(at::Tensor& tensor, const std::string& what) = 0;
  // input has world_size() equal chunks; chunk r of the sum lands in `output` on rank r.
  virtual std::unique_ptr<PendingCollective> reduce_scatter_sum_async(at::Tensor& output, at::Tensor& input,
                                                                      const std::string& what) = 0;
  // output = the ranks' `input`s concatenated in rank order.
  virtual void all_gather(at::Tensor& output, at::Tensor& input, const std::string& what) = 0;
  virtual void barrier(const std::string& what) = 0;
  // Uneven all-to-all along dim 0: input_splits[d] rows go to rank d, output_splits[s] rows
  // arrive from rank s.
  virtual void all_to_all(at::Tensor& output, at::Tensor& input, std::vector<int64_t> output_splits,
                          std::vector<int64_t> input_splits, const std::string& what) = 0;
};

}  // namespace latentmoe::parallel
