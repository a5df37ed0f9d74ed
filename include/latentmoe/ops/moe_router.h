// moe_router: the DeepSeekMoE gate after its GEMM, in one op - scores (sigmoid or softmax of the
// fp32 logits), the correction bias added for the selection only, group-limited top-k (a group
// scores as the sum of its top-2 biased scores for sigmoid, its best one for softmax), the gate
// weights from the unbiased scores (normalized over the chosen k if asked, times the scaling
// factor) and the per-expert counts. Registered as torch.ops.latentmoe.moe_router (CPU, any-device
// ATen body, Autograd: differentiable in the logits through the gate weights and the scores).
#pragma once

#include <ATen/core/Tensor.h>

#include <tuple>

namespace latentmoe::ops {

struct RouterChoice {
  int64_t top_k, n_group, topk_group;
  bool sigmoid, normalize;
  double scaling;
};

// logits [tokens, experts] fp32, bias [experts] fp32 -> expert_ids [tokens, top_k] int64 (best
// first; ties go to the lower expert id), gate_weights [tokens, top_k] fp32, scores [tokens,
// experts] fp32, counts [experts] int64.
std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> moe_router(const at::Tensor& logits, const at::Tensor& bias,
                                                                      const RouterChoice& choice);

// The specification in plain ATen ops (topk, masks, gather).
std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> moe_router_reference(const at::Tensor& logits,
                                                                                const at::Tensor& bias,
                                                                                const RouterChoice& choice);

}  // namespace latentmoe::ops
