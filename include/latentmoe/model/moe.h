// DeepSeekMoE layer: dropless routing over fine-grained experts plus always-on shared experts.
// Tokens are sorted by expert (permute), each expert's SwiGLU runs on its contiguous slice, and
// results are weighted and scattered back (unpermute). No per-expert masks over all tokens.
#pragma once

#include <torch/nn/module.h>
#include <torch/nn/pimpl.h>

#include "latentmoe/config/config.h"
#include "latentmoe/model/mlp.h"
#include "latentmoe/model/router.h"

namespace latentmoe::model {

class MoEImpl;

// Runs the routed experts for permuted tokens somewhere else (expert parallelism lives in
// src/parallel/ and plugs in here; the model itself stays single-device).
class ExpertDispatcher {
 public:
  virtual ~ExpertDispatcher() = default;
  virtual torch::Tensor routed_experts(MoEImpl& moe, const torch::Tensor& tokens, const RouterOutput& routing) = 0;
};

struct MoEOutput {
  torch::Tensor hidden;  // same shape as the input
  RouterOutput routing;
};

class MoEImpl : public torch::nn::Module {
 public:
  explicit MoEImpl(const config::ModelConfig& cfg);
  // x [..., hidden]
  MoEOutput forward(const torch::Tensor& x);
  // The routed part alone for given routing (exposed for tests and expert-parallel dispatch).
  torch::Tensor routed_experts(const torch::Tensor& tokens, const RouterOutput& routing);
  // Runs experts [first, first + counts.size()) on `sorted` rows grouped by expert (counts rows each).
  torch::Tensor run_experts(const torch::Tensor& sorted, int64_t first, const std::vector<int64_t>& counts);

  // Routed expert e by its GLOBAL index; throws if this module does not hold it.
  MLPImpl& expert(int64_t e);
  // Keeps experts [first, first + count) and frees the others (they live elsewhere, e.g. on other
  // expert-parallel ranks). Parameter names keep global indices: "experts.<e>.up_proj.weight".
  void retain_experts(int64_t first, int64_t count);
  int64_t first_local_expert() const { return first_local_; }
  int64_t local_expert_count() const { return static_cast<int64_t>(local_experts_.size()); }

  ExpertDispatcher* dispatcher = nullptr;  // not owned; null = all experts run here

  config::ModelConfig cfg;
  Router gate{nullptr};
  // Holds the routed experts as children named by global index: n_routed_experts x
  // MLP(hidden, moe_intermediate_size), or the retained range.
  std::shared_ptr<torch::nn::Module> experts;
  MLP shared_experts{nullptr};  // MLP(hidden, moe_intermediate_size x n_shared_experts)

 private:
  std::vector<MLP> local_experts_;  // local_experts_[i] = expert first_local_ + i
  int64_t first_local_ = 0;
};
TORCH_MODULE(MoE);

}  // namespace latentmoe::model
