// Data parallelism applied to a model written for one device: every rank holds all parameters;
// gradients are averaged and step scalars / expert counts summed over ranks. With ZeRO-1 each
// parameter's AdamW state lives on one owner rank, which updates it and shares the result.
#pragma once

#include <torch/types.h>

#include <map>
#include <string>
#include <vector>

#include "latentmoe/parallel/communicator.h"

namespace latentmoe::parallel {

class DataParallel {
 public:
  // params: the trainable parameters, in the optimizer's order.
  DataParallel(Communicator& comm, std::vector<torch::Tensor> params, bool zero1);

  bool zero1() const { return !owner_.empty(); }
  // ZeRO-1 owner test for parameter i (always true without ZeRO-1).
  bool owns(size_t i) const { return owner_.empty() || owner_[i] == comm_.rank(); }

  // Averages every gradient over the ranks (a parameter with no gradient on ANY rank stays
  // without one, exactly as in one process) and sums `scalars` and `counts` in place.
  void reduce(torch::Tensor& scalars, torch::Tensor& counts);
  // ZeRO-1: after the owners' update, every rank receives every parameter.
  void gather_owned_parameters();
  // ZeRO-1: fills in the moments of parameters this rank does not own (collective).
  void gather_owned_state(std::map<std::string, torch::Tensor>& state);

 private:
  Communicator& comm_;
  std::vector<torch::Tensor> params_;
  std::vector<int> owner_;  // ZeRO-1: owning rank per parameter; empty when off
};

}  // namespace latentmoe::parallel
