// Reentrant recomputation: forward without a graph, backward = rerun with a graph + a nested
// backward from the region's outputs to its (detached) inputs; parameters get their gradients in
// that nested pass.
#include "latentmoe/model/recompute.h"

#include <ATen/autocast_mode.h>
#include <torch/csrc/autograd/custom_function.h>

#include <stdexcept>

namespace latentmoe::model {

namespace {
using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

struct RegionHolder : torch::CustomClassHolder {
  Region region;
  bool autocast = false;
  at::ScalarType autocast_dtype = at::kBFloat16;
};

// The forward's autocast state for a region, with autocast's cast cache off: the cache keeps one
// cast per leaf tensor, and a region's inputs are leaves when it is recomputed, so two GEMMs
// reading one input would share a cast and sum their gradients in bf16 - not what the forward
// without recomputation does. (Off in the forward too: a cached weight cast made without a graph
// would silently cut the gradient of a later use of that weight.)
class AutocastState {
 public:
  AutocastState(bool enabled, at::ScalarType dtype)
      : enabled_(at::autocast::is_autocast_enabled(c10::DeviceType::CPU)),
        dtype_(at::autocast::get_autocast_dtype(c10::DeviceType::CPU)),
        cache_(at::autocast::is_autocast_cache_enabled()) {
    at::autocast::set_autocast_enabled(c10::DeviceType::CPU, enabled);
    at::autocast::set_autocast_dtype(c10::DeviceType::CPU, dtype);
    at::autocast::set_autocast_cache_enabled(false);
  }
  ~AutocastState() {
    at::autocast::set_autocast_enabled(c10::DeviceType::CPU, enabled_);
    at::autocast::set_autocast_dtype(c10::DeviceType::CPU, dtype_);
    at::autocast::set_autocast_cache_enabled(cache_);
  }

 private:
  bool enabled_;
  at::ScalarType dtype_;
  bool cache_;
};

class RecomputeFunction : public torch::autograd::Function<RecomputeFunction> {
 public:
  static variable_list forward(AutogradContext* ctx, c10::intrusive_ptr<RegionHolder> holder, at::TensorList inputs) {
    ctx->save_for_backward(inputs.vec());
    variable_list outputs;
    {
      const AutocastState autocast(holder->autocast, holder->autocast_dtype);
      outputs = holder->region(inputs.vec());
    }
    ctx->saved_data["region"] = c10::IValue::make_capsule(holder);
    return outputs;
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    const auto holder = c10::static_intrusive_pointer_cast<RegionHolder>(ctx->saved_data["region"].toCapsule());
    variable_list inputs;
    for (const torch::Tensor& saved : ctx->get_saved_variables()) {
      inputs.push_back(saved.defined() ? saved.detach().requires_grad_(saved.requires_grad()) : saved);
    }
    variable_list outputs;
    {
      const at::AutoGradMode grad_mode(true);
      const AutocastState autocast(holder->autocast, holder->autocast_dtype);
      outputs = holder->region(inputs);
    }
    variable_list roots, root_grads;
    for (size_t i = 0; i < outputs.size() && i < grads.size(); ++i) {
      if (grads[i].defined() && outputs[i].defined() && outputs[i].requires_grad()) {
        roots.push_back(outputs[i]);
        root_grads.push_back(grads[i]);
      }
    }
    if (!roots.empty()) torch::autograd::backward(roots, root_grads);
    variable_list result{torch::Tensor()};  // the region holder
    for (const torch::Tensor& input : inputs) {
      result.push_back(input.defined() && input.requires_grad() ? input.grad() : torch::Tensor());
    }
    return result;
  }
};
}  // namespace

Recompute parse_recompute(const std::string& name) {
  if (name == "none") return Recompute::none;
  if (name == "selective") return Recompute::selective;
  if (name == "full") return Recompute::full;
  throw std::invalid_argument("train.recompute must be none, selective or full, got '" + name + "'");
}

bool recompute_active(bool asked, bool training) { return asked && training && at::GradMode::is_enabled(); }

variable_list recomputed(const Region& region, const variable_list& inputs) {
  auto holder = c10::make_intrusive<RegionHolder>();
  holder->region = region;
  holder->autocast = at::autocast::is_autocast_enabled(c10::DeviceType::CPU);
  holder->autocast_dtype = at::autocast::get_autocast_dtype(c10::DeviceType::CPU);
  return RecomputeFunction::apply(holder, at::TensorList(inputs));
}

}  // namespace latentmoe::model
