// DeepSeekMoE layer: dropless routing over fine-grained experts plus always-on shared experts.
// Tokens are sorted by expert (permute), the routed experts run as two grouped GEMMs over their
// stacked weights (gate+up, then down) around one SwiGLU, and results are weighted and summed back
// per token (unpermute). No per-expert masks over all tokens. The MoE-layer seam
// (`model.ffn.type`; layer_registry.h makes one) is MoELayer.
#pragma once

#include <array>
#include <set>
#include <string>
#include <utility>

#include <torch/nn/module.h>
#include <torch/nn/pimpl.h>

#include "latentmoe/model/mlp.h"
#include "latentmoe/model/moe_settings.h"
#include "latentmoe/model/router.h"
#include "latentmoe/ops/fp8.h"

namespace latentmoe::model {

class DeepSeekMoEImpl;

// Runs the routed experts for permuted tokens somewhere else (expert parallelism lives in
// src/parallel/ and plugs in here; the model itself stays single-device).
class ExpertDispatcher {
 public:
  virtual ~ExpertDispatcher() = default;
  virtual torch::Tensor routed_experts(DeepSeekMoEImpl& moe, const torch::Tensor& tokens,
                                       const RouterOutput& routing) = 0;
};

// The routed experts a rank builds, by global index (expert parallelism: the others live on other
// ranks and are never allocated here). count -1: all of them.
struct ExpertShard {
  int64_t first = 0;
  int64_t count = -1;
};

struct MoEOutput {
  torch::Tensor hidden;  // same shape as the input
  RouterOutput routing;
};

// What a decoder block needs from the FFN of a MoE layer, whatever its type.
class MoELayer : public torch::nn::Module {
 public:
  // x [..., hidden]
  virtual MoEOutput forward(const torch::Tensor& x) = 0;
  // train.recompute=selective: the experts' activations rerun in the backward instead of being kept.
  virtual void set_selective_recompute(bool on) = 0;
};
TORCH_MODULE_IMPL(MoE, MoELayer);

// `deepseek_moe`: what it takes from the model section and model.ffn.
struct DeepSeekMoEOptions {
  // model.hidden_size, n_routed_experts and the model.ffn keys.
  static DeepSeekMoEOptions from_config(const config::ModelConfig& cfg);
  TORCH_ARG(int64_t, hidden_size) = 0;
  TORCH_ARG(int64_t, experts) = 0;  // routed experts
  TORCH_ARG(DeepSeekMoESettings, settings);
  TORCH_ARG(ExpertShard, held);  // the experts built here
};

class DeepSeekMoEImpl : public MoELayer {
 public:
  // gate: the model.router.type router for these experts.
  DeepSeekMoEImpl(const DeepSeekMoEOptions& options, Router gate);
  MoEOutput forward(const torch::Tensor& x) override;
  void set_selective_recompute(bool on) override;
  // The routed part alone for given routing (exposed for tests and expert-parallel dispatch).
  torch::Tensor routed_experts(const torch::Tensor& tokens, const RouterOutput& routing);
  // Runs experts [first, first + counts.size()) on `sorted` rows grouped by expert (counts rows each).
  // An expert without rows gets no gradient (as if it had not run), like a per-expert loop.
  torch::Tensor run_experts(const torch::Tensor& sorted, int64_t first, const std::vector<int64_t>& counts);

  // Routed expert e by its GLOBAL index; throws if this module does not hold it.
  MLPImpl& expert(int64_t e);
  // The held experts (options.held(); the others live on other expert-parallel ranks). Parameter
  // names keep global indices: "experts.<e>.up_proj.weight".
  int64_t first_local_expert() const { return options.held().first; }
  int64_t local_expert_count() const { return static_cast<int64_t>(local_experts_.size()); }

  ExpertDispatcher* dispatcher = nullptr;  // not owned; null = all experts run here
  // train.recompute=selective: the experts' gate/up grouped GEMM and SwiGLU rerun in the backward.
  bool recompute_activation = false;
  // precision.fp8: the routed experts' grouped GEMMs in FP8 (statistics under fp8_name + ".experts").
  ops::fp8::Recipe fp8;
  std::string fp8_name;

  DeepSeekMoEOptions options;
  Router gate{nullptr};
  // Holds the routed experts as children named by global index: n_routed_experts x
  // MLP(hidden, moe_intermediate_size), or the retained range.
  std::shared_ptr<torch::nn::Module> experts;
  MLP shared_experts{nullptr};  // MLP(hidden, moe_intermediate_size x n_shared_experts)

  // The held experts' weights, stacked for the grouped GEMMs. Each expert's gate_proj, up_proj and
  // down_proj weight is a view into these (so names, checkpoints, HF keys and the optimizer stay
  // per expert while the memory is one block per projection). Not registered: the per-expert
  // parameters are the state.
  torch::Tensor experts_gate_up;  // [local experts, 2 x moe_intermediate, hidden]: gate rows, then up rows
  torch::Tensor experts_down;     // [local experts, hidden, moe_intermediate]

 private:
  // (Re)builds the stacked tensors from the experts' current parameters and makes those views.
  void stack_expert_weights();
  // False after something replaced a parameter's storage (module->to(), set_data).
  bool expert_weights_stacked() const;
  // Held expert i's gate_proj, up_proj and down_proj weights, each with its place in the stacks.
  std::array<std::pair<torch::Tensor*, torch::Tensor>, 3> stacked_views(int64_t i, const torch::Tensor& gate_up,
                                                                        const torch::Tensor& down) const;

  std::vector<MLP> local_experts_;  // local_experts_[i] = expert first_local_expert() + i
};
TORCH_MODULE(DeepSeekMoE);

// The global names of the routed experts' parameters of every DeepSeekMoE layer under root (what
// expert parallelism splits and reduces over the expert-data-parallel group), found by structure.
std::set<std::string> routed_expert_parameter_names(torch::nn::Module& root);

}  // namespace latentmoe::model
