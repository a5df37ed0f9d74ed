// Flat all-reduces: one per step for gradients (+ gradient presence and step scalars), one for
// expert counts, one for ZeRO-1's parameter gather (owner value + zeros elsewhere: exact).
#include "latentmoe/parallel/data_parallel.h"

#include <algorithm>
#include <numeric>

namespace latentmoe::parallel {

DataParallel::DataParallel(Communicator& comm, std::vector<torch::Tensor> params, bool zero1)
    : comm_(comm), params_(std::move(params)) {
  if (!zero1) return;
  // Largest parameters first onto the least-loaded rank: about 1/world of the moments each.
  std::vector<size_t> order(params_.size());
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(), [&](size_t a, size_t b) { return params_[a].numel() > params_[b].numel(); });
  std::vector<int64_t> load(static_cast<size_t>(comm_.world_size()), 0);
  owner_.assign(params_.size(), 0);
  for (size_t i : order) {
    const auto least = static_cast<size_t>(std::min_element(load.begin(), load.end()) - load.begin());
    owner_[i] = static_cast<int>(least);
    load[least] += params_[i].numel();
  }
}

void DataParallel::reduce(torch::Tensor& scalars, torch::Tensor& counts) {
  torch::NoGradGuard no_grad;
  const int64_t n_scalars = scalars.numel();
  torch::Tensor packed = torch::zeros({n_scalars + static_cast<int64_t>(params_.size())}, torch::kDouble);
  packed.narrow(0, 0, n_scalars).copy_(scalars);
  std::vector<torch::Tensor> grads;
  for (size_t i = 0; i < params_.size(); ++i) {
    torch::Tensor& p = params_[i];
    if (p.grad().defined()) {
      packed[n_scalars + static_cast<int64_t>(i)] = 1.0;
    } else {
      p.mutable_grad() = torch::zeros_like(p);
    }
    grads.push_back(p.grad().reshape(-1));
  }
  comm_.all_reduce_sum(packed, "step-scalar and gradient-presence all-reduce");
  torch::Tensor flat = torch::cat(grads);
  comm_.all_reduce_sum(flat, "gradient all-reduce");
  flat.div_(static_cast<double>(comm_.world_size()));
  int64_t offset = 0;
  for (size_t i = 0; i < params_.size(); ++i) {
    torch::Tensor& p = params_[i];
    if (packed[n_scalars + static_cast<int64_t>(i)].item<double>() == 0.0) {
      p.mutable_grad().reset();
    } else {
      p.mutable_grad().copy_(flat.narrow(0, offset, p.numel()).view_as(p));
    }
    offset += p.numel();
  }
  scalars.copy_(packed.narrow(0, 0, n_scalars));
  comm_.all_reduce_sum(counts, "expert-count all-reduce");
}

void DataParallel::gather_owned_parameters() {
  torch::NoGradGuard no_grad;
  std::vector<torch::Tensor> pieces;
  for (size_t i = 0; i < params_.size(); ++i) {
    pieces.push_back(owns(i) ? params_[i].reshape(-1) : torch::zeros({params_[i].numel()}, params_[i].options()));
  }
  torch::Tensor flat = torch::cat(pieces);
  comm_.all_reduce_sum(flat, "ZeRO-1 parameter gather");
  int64_t offset = 0;
  for (auto& p : params_) {
    p.copy_(flat.narrow(0, offset, p.numel()).view_as(p));
    offset += p.numel();
  }
}

void DataParallel::gather_owned_state(std::map<std::string, torch::Tensor>& state) {
  torch::NoGradGuard no_grad;
  for (auto& [name, t] : state) {
    if (name == "step") continue;
    t = t.clone();
    comm_.all_reduce_sum(t, "ZeRO-1 optimizer-state gather");
  }
}

}  // namespace latentmoe::parallel
