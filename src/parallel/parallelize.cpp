// Parallelism: the layout's sub-groups, the expert dispatcher and the data-parallel reduction,
// behind one interface that is also the (trivial) one of a single process.
#include "latentmoe/parallel/parallelize.h"

#include <fmt/format.h>
#include <fmt/ranges.h>

#include "latentmoe/util/error.h"

namespace latentmoe::parallel {

Parallelism::Parallelism(const config::Config& cfg, Communicator* comm) : comm_(comm) {
  if (!comm_) return;
  rank_ = comm_->rank();
  world_ = comm_->world_size();
  layout_ = ParallelLayout(world_, rank_, static_cast<int>(cfg.parallel.ep), cfg.model.n_routed_experts);
  dp_options_ = {.zero1 = cfg.parallel.zero_stage == 1,
                 .bucket_bytes = static_cast<int64_t>(cfg.parallel.bucket_size_mb * (1 << 20)),
                 .expert_buckets_from_hooks = cfg.parallel.backend != "nccl",
                 .fingerprint_local_gradients = false};
  if (layout_->ep == 1) return;
  ep_comm_ = comm_->subgroup(fmt::format("ep.{}", layout_->ep_group()), layout_->ep_group_ranks());
  expert_dp_comm_ = comm_->subgroup(fmt::format("edp.{}", layout_->ep_rank()), layout_->edp_group_ranks());
  expert_dispatcher_ = std::make_unique<ExpertParallelDispatcher>(*ep_comm_, cfg.model.n_routed_experts);
}

Parallelism::~Parallelism() = default;

model::ModelBuild Parallelism::model_build(uint64_t seed) const {
  model::ModelBuild build{.seed = seed};
  if (layout_) build.experts = {.first = layout_->first_local_expert(), .count = layout_->local_experts()};
  return build;
}

void Parallelism::attach(model::DeepSeekV3Impl& model,
                         const std::vector<std::pair<std::string, torch::Tensor>>& trainable,
                         bool fingerprint_local_gradients) {
  experts_ = model::routed_expert_parameter_names(model);
  if (expert_dispatcher_) {
    for (const auto& module : model.modules(/*include_self=*/false)) {
      if (auto moe = std::dynamic_pointer_cast<model::DeepSeekMoEImpl>(module)) {
        moe->dispatcher = expert_dispatcher_.get();
      } else if (std::dynamic_pointer_cast<model::MoELayer>(module)) {
        throw ConfigError(fmt::format("parallel.ep={} places routed experts of model.ffn.type 'deepseek_moe' only; "
                                      "model.ffn.type '{}' runs with parallel.ep=1",
                                      layout_->ep, model.cfg.ffn.type()));
      }
    }
  }
  if (!comm_) return;
  std::vector<ReplicatedParam> replicated;
  for (const auto& [name, p] : trainable) replicated.push_back({name, p, is_expert(name)});
  DataParallelOptions options = dp_options_;
  options.fingerprint_local_gradients = fingerprint_local_gradients;
  data_parallel_ = std::make_unique<DataParallel>(*comm_, expert_dp_comm_.get(), ep_comm_.get(), replicated, options);
}

std::vector<std::pair<int64_t, int64_t>> Parallelism::optimizer_ranges() const {
  return data_parallel_ && data_parallel_->zero1() ? data_parallel_->owned_ranges()
                                                   : std::vector<std::pair<int64_t, int64_t>>{};
}

bool Parallelism::zero1() const { return data_parallel_ && data_parallel_->zero1(); }

std::string Parallelism::describe() const {
  if (!layout_) return "one process";
  std::string out = fmt::format("rank {} of {}, data parallel over {} ranks", rank_, world_, world_);
  if (layout_->ep > 1) {
    out += fmt::format("; expert parallel: EP group {} (ranks {}), expert-data-parallel group {} (ranks {}), experts "
                       "[{}, {}) here",
                       layout_->ep_group(), fmt::join(layout_->ep_group_ranks(), ","), layout_->ep_rank(),
                       fmt::join(layout_->edp_group_ranks(), ","), layout_->first_local_expert(),
                       layout_->first_local_expert() + layout_->local_experts());
  }
  return out + (zero1() ? "; ZeRO-1" : "");
}

void Parallelism::begin_backward(bool last_micro_batch) {
  if (data_parallel_) data_parallel_->begin_backward(last_micro_batch);
}

void Parallelism::finish_gradients(torch::Tensor& scalars, torch::Tensor& counts) {
  if (!data_parallel_) return;
  data_parallel_->finish_gradients(scalars, counts);
  scalars.div_(static_cast<double>(world_));
}

double Parallelism::grad_norm_squared(const torch::nn::Module& model,
                                      const std::function<double(const torch::Tensor&)>& squared_norm) {
  if (data_parallel_) return data_parallel_->grad_norm_squared();  // every tensor once, over all ranks
  double sum = 0;
  for (const auto& p : model.parameters()) {
    if (p.grad().defined()) sum += squared_norm(p.grad());
  }
  return sum;
}

uint64_t Parallelism::local_gradient_fingerprint(
    const torch::nn::Module& model, const std::function<uint64_t(const torch::Tensor&, uint64_t)>& fingerprint) {
  if (data_parallel_) return data_parallel_->local_gradient_fingerprint();
  uint64_t h = 0;
  for (const auto& p : model.parameters()) {
    if (p.grad().defined()) h = fingerprint(p.grad(), h);
  }
  return h;
}

void Parallelism::after_update() {
  if (data_parallel_) data_parallel_->gather_parameters();
}

void Parallelism::add_traffic(std::map<std::string, double>& scalars) {
  if (expert_dispatcher_) {
    scalars["ep/all_to_all_bytes"] = static_cast<double>(expert_dispatcher_->bytes_sent() - all_to_all_logged_);
    all_to_all_logged_ = expert_dispatcher_->bytes_sent();
  }
  if (data_parallel_) {
    scalars["dp/reduce_bytes"] = static_cast<double>(data_parallel_->bytes_reduced() - reduce_logged_);
    reduce_logged_ = data_parallel_->bytes_reduced();
  }
}

std::map<std::string, torch::Tensor> Parallelism::full_optimizer_state(std::map<std::string, torch::Tensor> local) {
  return data_parallel_ ? data_parallel_->full_optimizer_state(std::move(local)) : local;
}

std::vector<bool> Parallelism::checkpoint_writes(const std::vector<std::pair<std::string, int64_t>>& tensors) const {
  if (!layout_) return std::vector<bool>(tensors.size(), true);
  std::vector<int64_t> numels;
  std::vector<bool> sharded;
  for (const auto& [name, numel] : tensors) {
    numels.push_back(numel);
    sharded.push_back(is_expert(name));
  }
  return layout_->checkpoint_writes(numels, sharded);
}

bool Parallelism::all_agree(int64_t value, const std::string& what) {
  if (!comm_) return true;
  torch::Tensor agree = torch::tensor({value, value * value}, torch::kLong);
  comm_->all_reduce_sum(agree, what);
  const int64_t sum = agree[0].item<int64_t>(), sum_sq = agree[1].item<int64_t>();
  return world_ * sum_sq == sum * sum;  // equal iff every rank passed the same value (Cauchy-Schwarz)
}

std::vector<ReplicaGroup> Parallelism::replica_groups() const {
  if (!comm_ || world_ == 1) return {};
  const bool split_experts = expert_dp_comm_ != nullptr;
  std::vector<ReplicaGroup> groups{{comm_, "replicated", [this, split_experts](const std::string& name) {
                                      return !(split_experts && is_expert(name));
                                    }}};
  if (split_experts && expert_dp_comm_->world_size() > 1) {
    groups.push_back({expert_dp_comm_.get(),
                      fmt::format("the routed experts of expert-data-parallel group {}", expert_dp_comm_->name()),
                      [this](const std::string& name) { return is_expert(name); }});
  }
  return groups;
}

}  // namespace latentmoe::parallel
