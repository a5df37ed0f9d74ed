// Parameter initialization owned by the modules, keyed by each tensor's global name. Every module
// with parameters of its own implements ParameterInit for exactly those; reset_module_tree walks a
// model and fails, naming the module, when one with parameters does not, so a new layer cannot be
// silently mis-initialized. Each parameter draws from its own generator seeded by (seed, its
// global name): its initial values do not depend on which other tensors a process builds, so one
// process, data-, expert- and pipeline-parallel ranks all start from the same weights.
#pragma once

#include <ATen/core/Generator.h>
#include <torch/nn/module.h>

#include <string>

namespace latentmoe::model {

// The generators of one module's parameters.
class ParameterRng {
 public:
  ParameterRng(uint64_t seed, std::string module_path) : seed_(seed), module_path_(std::move(module_path)) {}
  // The generator of this module's parameter `name`: seeded by (seed, "<module path>.<name>").
  at::Generator operator()(const std::string& name) const;
  // The stream key of a parameter's global name (what a rank that builds only a shard reproduces).
  static uint64_t stream_seed(uint64_t seed, const std::string& global_name);

 private:
  uint64_t seed_;
  std::string module_path_;
};

class ParameterInit {
 public:
  virtual ~ParameterInit() = default;
  // Initializes this module's own parameters (not its children's), each from rng(its name).
  // init_std: model.init_std.
  virtual void reset_own_parameters(double init_std, const ParameterRng& rng) = 0;
};

// Where modules allocate their parameters while they are built on this thread: the CPU, or the
// meta device inside a BuildOnMeta scope (names and shapes without memory: `config --shard`
// counts a 671B model's rank without allocating it).
torch::TensorOptions parameter_options();
class BuildOnMeta {
 public:
  BuildOnMeta();
  ~BuildOnMeta();
  BuildOnMeta(const BuildOnMeta&) = delete;
  BuildOnMeta& operator=(const BuildOnMeta&) = delete;

 private:
  bool previous_;
};

// Every module under root (pre-order), each resetting its own parameters; `prefix` is root's
// global name ("" for a whole model). Throws std::logic_error naming a module that has parameters
// and does not implement ParameterInit. Meta parameters are left alone (they have no values).
void reset_module_tree(torch::nn::Module& root, double init_std, uint64_t seed, const std::string& prefix = "");

}  // namespace latentmoe::model
