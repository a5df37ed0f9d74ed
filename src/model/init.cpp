#include "latentmoe/model/init.h"

#include <ATen/CPUGeneratorImpl.h>
#include <fmt/format.h>

#include <stdexcept>

#include "latentmoe/util/hash.h"

namespace latentmoe::model {

namespace {
thread_local bool g_build_on_meta = false;
}  // namespace

uint64_t ParameterRng::stream_seed(uint64_t seed, const std::string& global_name) {
  return mix64(splitmix64(seed), fingerprint64(global_name.data(), global_name.size()));
}

at::Generator ParameterRng::operator()(const std::string& name) const {
  const std::string global = module_path_.empty() ? name : module_path_ + "." + name;
  return at::make_generator<at::CPUGeneratorImpl>(stream_seed(seed_, global));
}

torch::TensorOptions parameter_options() {
  return torch::TensorOptions(torch::kFloat).device(g_build_on_meta ? torch::kMeta : torch::kCPU);
}

BuildOnMeta::BuildOnMeta() : previous_(g_build_on_meta) { g_build_on_meta = true; }
BuildOnMeta::~BuildOnMeta() { g_build_on_meta = previous_; }

void reset_module_tree(torch::nn::Module& root, double init_std, uint64_t seed, const std::string& prefix) {
  torch::NoGradGuard no_grad;
  // The root by reference: it may be under construction, not yet owned by a shared_ptr.
  std::vector<std::pair<std::string, torch::nn::Module*>> all{{prefix, &root}};
  for (const auto& item : root.named_modules(prefix, /*include_self=*/false)) all.emplace_back(item.key(), item.value().get());
  for (const auto& [path, module_ptr] : all) {
    torch::nn::Module& module = *module_ptr;
    const auto own = module.named_parameters(/*recurse=*/false);
    if (own.is_empty()) continue;
    if (own.begin()->value().is_meta()) continue;
    auto* init = dynamic_cast<ParameterInit*>(&module);
    if (!init) {
      throw std::logic_error(fmt::format("module '{}' ({}) has parameters but does not implement "
                                         "model::ParameterInit (model/init.h): say how they are initialized",
                                         path.empty() ? "<root>" : path, module.name()));
    }
    init->reset_own_parameters(init_std, ParameterRng(seed, path));
  }
}

}  // namespace latentmoe::model
