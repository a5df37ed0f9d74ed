// Dispatch/combine for expert parallelism.
#include "latentmoe/parallel/expert_parallel.h"

#include <torch/autograd.h>

#include <numeric>

namespace latentmoe::parallel {

namespace {
int64_t sum(const std::vector<int64_t>& v) { return std::accumulate(v.begin(), v.end(), int64_t{0}); }

class AllToAllRows : public torch::autograd::Function<AllToAllRows> {
 public:
  static torch::Tensor forward(torch::autograd::AutogradContext* ctx, const torch::Tensor& input, int64_t comm_address,
                               std::vector<int64_t> input_splits, std::vector<int64_t> output_splits, std::string what) {
    auto& comm = *reinterpret_cast<Communicator*>(comm_address);
    ctx->saved_data["comm"] = comm_address;
    ctx->saved_data["input_splits"] = input_splits;
    ctx->saved_data["output_splits"] = output_splits;
    ctx->saved_data["what"] = what;
    torch::Tensor in = input.contiguous();
    std::vector<int64_t> shape = input.sizes().vec();
    shape[0] = sum(output_splits);
    torch::Tensor out = torch::empty(shape, input.options());
    comm.all_to_all(out, in, output_splits, input_splits, what);
    return out;
  }
  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grad_outputs) {
    auto& comm = *reinterpret_cast<Communicator*>(ctx->saved_data["comm"].toInt());
    const auto input_splits = ctx->saved_data["input_splits"].toIntVector();
    const auto output_splits = ctx->saved_data["output_splits"].toIntVector();
    torch::Tensor grad = grad_outputs[0].contiguous();
    std::vector<int64_t> shape = grad.sizes().vec();
    shape[0] = sum(input_splits);
    torch::Tensor grad_input = torch::empty(shape, grad.options());
    comm.all_to_all(grad_input, grad, input_splits, output_splits, ctx->saved_data["what"].toStringRef() + " (backward)");
    return {grad_input, torch::Tensor(), torch::Tensor(), torch::Tensor(), torch::Tensor()};
  }
};
}  // namespace

torch::Tensor all_to_all_rows(Communicator& comm, const torch::Tensor& input, const std::vector<int64_t>& input_splits,
                              const std::vector<int64_t>& output_splits, const std::string& what) {
  return AllToAllRows::apply(input, reinterpret_cast<int64_t>(&comm), input_splits, output_splits, what);
}

ExpertParallelDispatcher::ExpertParallelDispatcher(Communicator& comm, int64_t n_experts)
    : comm_(comm), n_experts_(n_experts), local_experts_(n_experts / comm.world_size()) {}

torch::Tensor ExpertParallelDispatcher::routed_experts(model::DeepSeekMoEImpl& moe, const torch::Tensor& tokens,
                                                       const model::RouterOutput& routing) {
  const int world = comm_.world_size(), rank = comm_.rank();
  const int64_t top_k = routing.expert_ids.size(1);
  // 1. Permute by expert (owners are contiguous expert ranges, so also by destination rank).
  const torch::Tensor order = routing.expert_ids.reshape(-1).argsort(/*stable=*/true);
  const torch::Tensor source_token = order.div(top_k, "floor");
  const torch::Tensor permuted = tokens.index_select(0, source_token);
  // 2. Every rank learns every rank's per-expert counts (one small all-reduce).
  torch::Tensor all_counts = torch::zeros({world, n_experts_}, torch::kLong);
  all_counts[rank].copy_(routing.expert_counts.cpu());
  comm_.all_reduce_sum(all_counts, "expert-parallel count exchange");
  // count(s, d, j): tokens rank s sends to rank d for d's local expert j.
  const int64_t* counts = all_counts.data_ptr<int64_t>();
  const auto count = [&](int s, int d, int64_t j) { return counts[s * n_experts_ + d * local_experts_ + j]; };
  std::vector<int64_t> send(world, 0), recv(world, 0);
  for (int d = 0; d < world; ++d) {
    for (int64_t j = 0; j < local_experts_; ++j) {
      send[d] += count(rank, d, j);
      recv[d] += count(d, rank, j);
    }
  }
  // 3. Dispatch.
  const torch::Tensor received = all_to_all_rows(comm_, permuted, send, recv, "expert-parallel dispatch all-to-all");
  bytes_sent_ += (sum(send)) * tokens.size(1) * static_cast<int64_t>(tokens.element_size());
  // 4. Regroup the received rows (source-major) by local expert, run, and restore the order.
  std::vector<int64_t> regroup;
  regroup.reserve(static_cast<size_t>(sum(recv)));
  std::vector<int64_t> source_offset(world, 0);
  for (int s = 1; s < world; ++s) source_offset[s] = source_offset[s - 1] + recv[s - 1];
  std::vector<int64_t> per_local(static_cast<size_t>(local_experts_), 0);
  for (int64_t j = 0; j < local_experts_; ++j) {
    for (int s = 0; s < world; ++s) {
      int64_t start = source_offset[s];
      for (int64_t i = 0; i < j; ++i) start += count(s, rank, i);
      const int64_t n = count(s, rank, j);
      for (int64_t k = 0; k < n; ++k) regroup.push_back(start + k);
      per_local[static_cast<size_t>(j)] += n;
    }
  }
  const torch::Tensor regroup_index = torch::tensor(regroup, torch::kLong);
  torch::Tensor computed = moe.run_experts(received.index_select(0, regroup_index), rank * local_experts_, per_local);
  torch::Tensor restored = torch::zeros_like(computed).index_copy(0, regroup_index, computed);
  // 5. Combine: send results back, then the weighted unpermute as on one device.
  const torch::Tensor back = all_to_all_rows(comm_, restored, recv, send, "expert-parallel combine all-to-all");
  bytes_sent_ += sum(recv) * tokens.size(1) * static_cast<int64_t>(tokens.element_size());
  const torch::Tensor weights = routing.gate_weights.reshape(-1).index_select(0, order).unsqueeze(1);
  return torch::zeros_like(tokens, back.scalar_type())
      .index_add(0, source_token, back * weights.to(back.scalar_type()))
      .to(tokens.scalar_type());
}

}  // namespace latentmoe::parallel
