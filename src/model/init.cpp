#include "latentmoe/model/init.h"

#include <torch/nn/modules/embedding.h>

#include <fmt/format.h>

#include <stdexcept>

namespace latentmoe::model {

void reset_module_tree(torch::nn::Module& root, double init_std) {
  torch::NoGradGuard no_grad;
  // The root by reference: it may be under construction, not yet owned by a shared_ptr.
  std::vector<std::pair<std::string, torch::nn::Module*>> all{{"", &root}};
  for (const auto& item : root.named_modules("", /*include_self=*/false)) all.emplace_back(item.key(), item.value().get());
  for (const auto& [path, module_ptr] : all) {
    torch::nn::Module& module = *module_ptr;
    if (module.named_parameters(/*recurse=*/false).is_empty()) continue;
    if (auto* own = dynamic_cast<ParameterInit*>(&module)) {
      own->reset_own_parameters(init_std);
    } else if (auto* embedding = dynamic_cast<torch::nn::EmbeddingImpl*>(&module)) {
      embedding->weight.normal_(0.0, init_std);
    } else {
      throw std::logic_error(fmt::format("module '{}' ({}) has parameters but does not implement "
                                         "model::ParameterInit (model/init.h): say how they are initialized",
                                         path.empty() ? "<root>" : path, module.name()));
    }
  }
}

}  // namespace latentmoe::model
