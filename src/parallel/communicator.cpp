// Gloo process group over a TCPStore; the only file that includes c10d headers.
#include "latentmoe/parallel/communicator.h"

#include <fmt/format.h>
#include <torch/csrc/distributed/c10d/ProcessGroupGloo.hpp>
#include <torch/csrc/distributed/c10d/TCPStore.hpp>

#include <cstdlib>

#include "latentmoe/util/error.h"

namespace latentmoe::parallel {

namespace {
std::optional<std::string> env(const char* name) {
  const char* v = std::getenv(name);
  return v && *v ? std::optional<std::string>(v) : std::nullopt;
}

int env_int(const char* name, int fallback, int min_value) {
  const auto v = env(name);
  if (!v) return fallback;
  try {
    size_t used = 0;
    const int value = std::stoi(*v, &used);
    if (used != v->size() || value < min_value) throw std::invalid_argument(*v);
    return value;
  } catch (const std::exception&) {
    throw ConfigError(fmt::format("environment {}='{}' must be an integer >= {}", name, *v, min_value));
  }
}

class GlooCommunicator final : public Communicator {
 public:
  GlooCommunicator(const DistributedEnv& env, std::chrono::seconds timeout) : rank_(env.rank), world_(env.world_size) {
    c10d::TCPStoreOptions store_options;
    store_options.port = static_cast<uint16_t>(env.master_port);
    // Under torchrun the elastic agent already serves the store on MASTER_PORT: join it.
    const auto agent_store = std::getenv("TORCHELASTIC_USE_AGENT_STORE");
    store_options.isServer = env.rank == 0 && !(agent_store && std::string(agent_store) == "True");
    store_options.numWorkers = env.world_size;
    store_options.timeout = timeout;
    try {
      store_ = c10::make_intrusive<c10d::TCPStore>(env.master_addr, store_options);
      auto options = c10d::ProcessGroupGloo::Options::create(timeout);
      options->devices.push_back(c10d::ProcessGroupGloo::createDeviceForHostname(env.master_addr));
      group_ = c10::make_intrusive<c10d::ProcessGroupGloo>(store_, env.rank, env.world_size, options);
    } catch (const std::exception& e) {
      throw std::runtime_error(fmt::format("rank {}: rendezvous with {} ranks at {}:{} failed within {} s: {}", env.rank,
                                           env.world_size, env.master_addr, env.master_port, timeout.count(), e.what()));
    }
  }
  int rank() const override { return rank_; }
  int world_size() const override { return world_; }

  void all_reduce_sum(at::Tensor& tensor, const std::string& what) override {
    std::vector<at::Tensor> tensors{tensor};
    run(what, [&] { return group_->allreduce(tensors); });
  }
  void all_to_all(at::Tensor& output, at::Tensor& input, std::vector<int64_t> output_splits,
                  std::vector<int64_t> input_splits, const std::string& what) override {
    run(what, [&] { return group_->alltoall_base(output, input, output_splits, input_splits); });
  }
  void barrier(const std::string& what) override {
    run(what, [&] { return group_->barrier(); });
  }

 private:
  template <class F>
  void run(const std::string& what, F&& start) {
    try {
      start()->wait();
    } catch (const std::exception& e) {
      throw std::runtime_error(fmt::format("rank {} of {}: {} failed (a peer rank died or timed out?): {}", rank_, world_,
                                           what, e.what()));
    }
  }
  int rank_, world_;
  c10::intrusive_ptr<c10d::Store> store_;
  c10::intrusive_ptr<c10d::ProcessGroupGloo> group_;
};
}  // namespace

DistributedEnv distributed_env_from_environment() {
  DistributedEnv e;
  e.world_size = env_int("WORLD_SIZE", 1, 1);
  if (e.world_size == 1) return e;
  if (!env("RANK")) throw ConfigError(fmt::format("environment WORLD_SIZE={} but RANK is not set (launch with torchrun)", e.world_size));
  e.rank = env_int("RANK", 0, 0);
  if (e.rank >= e.world_size) {
    throw ConfigError(fmt::format("environment RANK={} must be < WORLD_SIZE={}", e.rank, e.world_size));
  }
  e.local_rank = env_int("LOCAL_RANK", e.rank, 0);
  const auto addr = env("MASTER_ADDR");
  if (!addr) throw ConfigError("environment MASTER_ADDR is not set (the rank-0 host; torchrun sets it)");
  e.master_addr = *addr;
  if (!env("MASTER_PORT")) throw ConfigError("environment MASTER_PORT is not set (a free TCP port on MASTER_ADDR)");
  e.master_port = env_int("MASTER_PORT", 0, 1);
  if (e.master_port > 65535) throw ConfigError(fmt::format("environment MASTER_PORT={} must be <= 65535", e.master_port));
  return e;
}

std::unique_ptr<Communicator> Communicator::create(const DistributedEnv& env, const std::string& backend,
                                                   std::chrono::seconds timeout) {
  if (backend == "nccl") {
    throw ConfigError("parallel.backend 'nccl': the NCCL path is not wired up yet; use 'gloo' or 'auto' on CPU");
  }
  return std::make_unique<GlooCommunicator>(env, timeout);
}

}  // namespace latentmoe::parallel
