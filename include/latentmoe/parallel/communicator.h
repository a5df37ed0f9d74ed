// Process groups from the standard launcher environment (RANK, WORLD_SIZE, LOCAL_RANK,
// MASTER_ADDR, MASTER_PORT; torchrun sets them): TCPStore rendezvous, then torch's own c10d
// backend (gloo on CPU). Environment errors are raised before any collective; every collective
// error names this rank and the operation.
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

class Communicator {
 public:
  virtual ~Communicator() = default;
  // backend: "auto" or "gloo" (CPU). timeout bounds every collective and the rendezvous.
  static std::unique_ptr<Communicator> create(const DistributedEnv& env, const std::string& backend,
                                              std::chrono::seconds timeout);
  virtual int rank() const = 0;
  virtual int world_size() const = 0;
  // In-place sum over all ranks; `what` names the operation in errors ("gradient all-reduce").
  virtual void all_reduce_sum(at::Tensor& tensor, const std::string& what) = 0;
  virtual void barrier(const std::string& what) = 0;
  // Uneven all-to-all along dim 0: input_splits[d] rows go to rank d, output_splits[s] rows
  // arrive from rank s.
  virtual void all_to_all(at::Tensor& output, at::Tensor& input, std::vector<int64_t> output_splits,
                          std::vector<int64_t> input_splits, const std::string& what) = 0;
};

}  // namespace latentmoe::parallel
