// Expert parallelism inside an EP group of parallel.ep ranks: expert e is computed on the group's
// rank e / (experts / ep), which is the only one of the group to build it. Tokens sorted by
// expert go out with an uneven all-to-all (counts exchanged first), are regrouped by local
// expert, run, and come back with the reverse all-to-all; both directions are autograd functions,
// so gradients flow back the same way. Deterministic order.
#pragma once

#include "latentmoe/model/moe.h"
#include "latentmoe/parallel/communicator.h"

namespace latentmoe::parallel {

class ExpertParallelDispatcher final : public model::ExpertDispatcher {
 public:
  ExpertParallelDispatcher(Communicator& comm, int64_t n_experts);
  torch::Tensor routed_experts(model::DeepSeekMoEImpl& moe, const torch::Tensor& tokens, const model::RouterOutput& routing) override;
  int64_t bytes_sent() const { return bytes_sent_; }  // all-to-all payload sent by this rank so far

 private:
  Communicator& comm_;
  int64_t n_experts_, local_experts_;
  int64_t bytes_sent_ = 0;
};

// Differentiable uneven all-to-all (its backward is the all-to-all with the splits swapped).
torch::Tensor all_to_all_rows(Communicator& comm, const torch::Tensor& input, const std::vector<int64_t>& input_splits,
                              const std::vector<int64_t>& output_splits, const std::string& what);

}  // namespace latentmoe::parallel
