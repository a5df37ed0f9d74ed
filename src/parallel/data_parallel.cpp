// Bucketed gradient reduction driven by gradient hooks, and ZeRO-1's chunk ownership.
#include "latentmoe/parallel/data_parallel.h"

#include <algorithm>
#include <stdexcept>

#include "latentmoe/parallel/layout.h"
#include "latentmoe/util/hash.h"

namespace latentmoe::parallel {

DataParallel::DataParallel(Communicator& world, Communicator* expert_dp, Communicator* expert_parallel,
                           std::vector<ReplicatedParam> params, DataParallelOptions options)
    : world_(world), expert_parallel_(expert_parallel), params_(std::move(params)), options_(options) {
  dense_.comm = &world_;
  expert_.comm = expert_dp;
  param_group_.assign(params_.size(), 0);
  for (size_t i = 0; i < params_.size(); ++i) {
    param_group_[i] = params_[i].expert && expert_dp ? 1 : 0;
    group_of(i).params.push_back(i);
  }
  where_.assign(params_.size(), {0, 0});
  seen_.assign(params_.size(), 0);
  build_buckets(dense_);
  if (expert_.comm) build_buckets(expert_);
  for (size_t i = 0; i < params_.size(); ++i) {
    hook_handles_.push_back(params_[i].param.register_hook([this, i](const torch::Tensor& grad) { on_gradient(i, grad); }));
  }
}

DataParallel::~DataParallel() {
  for (size_t i = 0; i < params_.size(); ++i) params_[i].param.remove_hook(static_cast<unsigned>(hook_handles_[i]));
}

void DataParallel::build_buckets(Group& group) {
  const int64_t ranks = group.comm->world_size();
  std::vector<int64_t> numels;
  for (size_t i : group.params) numels.push_back(params_[i].param.numel());
  const BucketPlan plan = plan_buckets(numels, options_.bucket_bytes, static_cast<int>(ranks));
  for (const BucketPlan::Bucket& planned : plan.buckets) {
    Bucket& b = group.buckets.emplace_back();
    for (const BucketPlan::Slot& s : planned.slots) b.slots.push_back({group.params[s.param], s.offset, s.numel});
    b.numel = planned.numel;
    b.padded = planned.padded;
    b.buffer = torch::zeros({b.padded}, torch::kFloat);
    if (options_.zero1) b.chunk = torch::zeros({b.padded / ranks}, torch::kFloat);
  }
  for (size_t k = 0; k < group.params.size(); ++k) where_[group.params[k]] = plan.where[k];
}

std::vector<std::pair<int64_t, int64_t>> DataParallel::owned_ranges() const {
  std::vector<std::pair<int64_t, int64_t>> out;
  for (size_t i = 0; i < params_.size(); ++i) {
    const int64_t numel = params_[i].param.numel();
    if (!options_.zero1) {
      out.emplace_back(0, numel);
      continue;
    }
    const Group& g = param_group_[i] == 0 ? dense_ : expert_;
    const Bucket& b = g.buckets[where_[i].first];
    const Slot& s = b.slots[where_[i].second];
    const auto [lo, hi] = zero1_owned_span(s.offset, s.numel, b.padded / g.comm->world_size(), g.comm->rank());
    out.emplace_back(hi > lo ? lo - s.offset : 0, std::max<int64_t>(0, hi - lo));
  }
  return out;
}

void DataParallel::begin_backward(bool last_micro_batch) {
  armed_ = last_micro_batch;
  if (!armed_) return;
  std::fill(seen_.begin(), seen_.end(), 0);
  local_fingerprint_ = 0;
  for (Group* g : {&dense_, &expert_}) {
    g->next_launch = 0;
    for (auto& b : g->buckets) {
      b.ready = 0;
      b.pending.reset();
    }
  }
}

void DataParallel::on_gradient(size_t i, const torch::Tensor& grad) {
  // Undefined: the parameter's node ran but produced no gradient (a routed expert that got no
  // rows from the stacked-expert backward) - the same as not being reached at all.
  if (!armed_ || !grad.defined()) return;
  torch::NoGradGuard no_grad;
  Group& g = group_of(i);
  Bucket& b = g.buckets[where_[i].first];
  const Slot& s = b.slots[where_[i].second];
  torch::Tensor dst = b.buffer.narrow(0, s.offset, s.numel);
  if (seen_[i]) {  // a second gradient for the same parameter in this backward
    if (where_[i].first < g.next_launch) {
      throw std::logic_error("data parallel: parameter '" + params_[i].name +
                             "' received a second gradient after its bucket's reduction started (several backward "
                             "passes per micro-batch are not supported)");
    }
    dst.add_(grad.reshape(-1));
    return;
  }
  seen_[i] = 1;
  dst.copy_(grad.reshape(-1));
  const torch::Tensor& previous = params_[i].param.grad();  // earlier micro-batches' sum
  if (previous.defined()) dst.add_(previous.reshape(-1));
  ++b.ready;
  if (&g == &dense_ || options_.expert_buckets_from_hooks) launch_ready(g, false);
}

void DataParallel::launch_ready(Group& g, bool force) {
  while (g.next_launch < g.buckets.size()) {
    Bucket& b = g.buckets[g.next_launch];
    if (!force && b.ready < b.slots.size()) return;  // strictly in order: the same sequence on every rank
    if (force) {
      for (const Slot& s : b.slots) {
        if (seen_[s.param]) continue;
        const torch::Tensor& grad = params_[s.param].param.grad();
        torch::Tensor dst = b.buffer.narrow(0, s.offset, s.numel);
        grad.defined() ? dst.copy_(grad.reshape(-1)) : dst.zero_();
      }
    }
    launch(g, b);
    ++g.next_launch;
  }
}

void DataParallel::launch(Group& g, Bucket& b) {
  const std::string what = options_.zero1 ? "gradient reduce-scatter" : "gradient all-reduce";
  if (options_.fingerprint_local_gradients) {  // before the collective overwrites the buffer
    const torch::Tensor local = b.buffer.device().is_cpu() ? b.buffer : b.buffer.cpu();
    local_fingerprint_ = fingerprint64(local.data_ptr(), static_cast<size_t>(local.numel()) * local.element_size(), local_fingerprint_);
  }
  b.pending = options_.zero1 ? g.comm->reduce_scatter_sum_async(b.chunk, b.buffer, what)
                             : g.comm->all_reduce_sum_async(b.buffer, what);
  if (g.comm->world_size() > 1) bytes_reduced_ += b.padded * 4;
}

void DataParallel::finish_gradients(torch::Tensor& scalars, torch::Tensor& counts) {
  torch::NoGradGuard no_grad;
  armed_ = false;
  launch_ready(dense_, true);
  if (expert_.comm) launch_ready(expert_, true);
  // Presence flags (did any rank of the group produce a gradient?) travel with the step scalars.
  const auto presence = [&](const Group& g) {
    torch::Tensor flags = torch::zeros({static_cast<int64_t>(g.params.size())}, torch::kDouble);
    for (size_t k = 0; k < g.params.size(); ++k) {
      if (seen_[g.params[k]] || params_[g.params[k]].param.grad().defined()) flags[static_cast<int64_t>(k)] = 1.0;
    }
    return flags;
  };
  const int64_t n_scalars = scalars.numel();
  torch::Tensor packed = torch::cat({scalars.to(torch::kDouble).reshape(-1), presence(dense_)});
  world_.all_reduce_sum(packed, "step-scalar and gradient-presence all-reduce");
  scalars.copy_(packed.narrow(0, 0, n_scalars));
  complete(dense_, packed.narrow(0, n_scalars, packed.numel() - n_scalars));
  if (expert_.comm) {
    torch::Tensor expert_presence = presence(expert_);
    expert_.comm->all_reduce_sum(expert_presence, "expert gradient-presence all-reduce");
    complete(expert_, expert_presence);
  }
  world_.all_reduce_sum(counts, "expert-count all-reduce");
}

void DataParallel::complete(Group& g, const torch::Tensor& presence) {
  const double scale = 1.0 / static_cast<double>(world_.world_size());  // the mean over the global batch
  const int64_t ranks = g.comm->world_size(), rank = g.comm->rank();
  std::vector<size_t> position(params_.size());
  for (size_t k = 0; k < g.params.size(); ++k) position[g.params[k]] = k;
  const double* present = presence.data_ptr<double>();
  for (auto& b : g.buckets) {
    b.pending->wait();
    const int64_t chunk = b.padded / ranks;
    for (const Slot& s : b.slots) {
      torch::Tensor& p = params_[s.param].param;
      if (present[position[s.param]] == 0.0) {
        p.mutable_grad().reset();
        continue;
      }
      if (!p.grad().defined() || !p.grad().is_contiguous()) {
        p.mutable_grad() = p.grad().defined() ? p.grad().contiguous() : torch::zeros_like(p);
      }
      torch::Tensor grad = p.mutable_grad().view(-1);
      if (!options_.zero1) {
        grad.copy_(b.buffer.narrow(0, s.offset, s.numel)).mul_(scale);
        continue;
      }
      const auto [lo, hi] = zero1_owned_span(s.offset, s.numel, chunk, rank);
      if (hi > lo) grad.narrow(0, lo - s.offset, hi - lo).copy_(b.chunk.narrow(0, lo - rank * chunk, hi - lo)).mul_(scale);
    }
  }
}

double DataParallel::grad_norm_squared() {
  torch::NoGradGuard no_grad;
  const auto ranges = owned_ranges();
  double dense = 0, expert = 0;
  for (size_t i = 0; i < params_.size(); ++i) {
    const torch::Tensor& grad = params_[i].param.grad();
    if (!grad.defined() || ranges[i].second == 0) continue;
    const double sq = grad.reshape(-1).narrow(0, ranges[i].first, ranges[i].second).to(torch::kDouble).pow(2).sum().item<double>();
    (param_group_[i] == 1 ? expert : dense) += sq;
  }
  if (options_.zero1) {  // every element is owned by exactly one rank of its group: sum everything
    torch::Tensor total = torch::tensor({dense + expert}, torch::kDouble);
    world_.all_reduce_sum(total, "gradient-norm all-reduce");
    return total.item<double>();
  }
  if (expert_.comm && expert_parallel_) {  // each EP group holds every expert once
    torch::Tensor e = torch::tensor({expert}, torch::kDouble);
    expert_parallel_->all_reduce_sum(e, "expert gradient-norm all-reduce");
    expert = e.item<double>();
  }
  return dense + expert;
}

void DataParallel::gather_parameters() {
  if (!options_.zero1) return;
  torch::NoGradGuard no_grad;
  for (Group* g : {&dense_, &expert_}) {
    if (!g->comm) continue;
    const int64_t ranks = g->comm->world_size(), rank = g->comm->rank();
    for (auto& b : g->buckets) {
      const int64_t chunk = b.padded / ranks;
      b.chunk.zero_();
      for (const Slot& s : b.slots) {
        const auto [lo, hi] = zero1_owned_span(s.offset, s.numel, chunk, rank);
        if (hi > lo) b.chunk.narrow(0, lo - rank * chunk, hi - lo).copy_(params_[s.param].param.view(-1).narrow(0, lo - s.offset, hi - lo));
      }
      g->comm->all_gather(b.buffer, b.chunk, "ZeRO-1 parameter all-gather");
      if (ranks > 1) bytes_reduced_ += chunk * 4;
      for (const Slot& s : b.slots) params_[s.param].param.view(-1).copy_(b.buffer.narrow(0, s.offset, s.numel));
    }
  }
}

std::map<std::string, torch::Tensor> DataParallel::full_optimizer_state(std::map<std::string, torch::Tensor> state) {
  if (!options_.zero1) return state;
  torch::NoGradGuard no_grad;
  // Outside its owned range each rank holds zeros, so a sum over the group is the full moment.
  for (Group* g : {&dense_, &expert_}) {
    if (!g->comm) continue;
    for (const char* moment : {"exp_avg.", "exp_avg_sq."}) {
      for (auto& b : g->buckets) {
        b.buffer.zero_();
        for (const Slot& s : b.slots) {
          b.buffer.narrow(0, s.offset, s.numel).copy_(state.at(moment + params_[s.param].name).reshape(-1));
        }
        g->comm->all_reduce_sum(b.buffer, "ZeRO-1 optimizer-state gather");
        for (const Slot& s : b.slots) {
          state[moment + params_[s.param].name] = b.buffer.narrow(0, s.offset, s.numel).clone().view_as(params_[s.param].param);
        }
      }
    }
  }
  return state;
}

}  // namespace latentmoe::parallel
