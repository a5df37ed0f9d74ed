// Parameter initialization owned by the modules: each module with parameters of its own
// implements ParameterInit for exactly those; reset_module_tree walks a model and fails, naming
// the module, when one with parameters does not, so a new layer cannot be silently mis-initialized.
#pragma once

#include <torch/nn/module.h>

namespace latentmoe::model {

class ParameterInit {
 public:
  virtual ~ParameterInit() = default;
  // Initializes this module's own parameters (not its children's). init_std: model.init_std.
  virtual void reset_own_parameters(double init_std) = 0;
};

// Every module under root in pre-order (the order of named_parameters(), so the random draws are
// those of one pass over the parameters), each resetting its own. torch::nn::Embedding weights
// get Normal(0, init_std). Throws std::logic_error naming a module that has parameters and is
// neither.
void reset_module_tree(torch::nn::Module& root, double init_std);

}  // namespace latentmoe::model
