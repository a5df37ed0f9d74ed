// Activation recomputation: a region of the forward runs without keeping its intermediate
// tensors, and runs again inside the backward pass to rebuild them (the reentrant scheme of
// torch.utils.checkpoint). Only the region's inputs are kept. What a region is, per mode:
//   selective: per layer, the attention core (input norm, q/kv down-projections and their norms,
//              the MLA up-projections, rotary, SDPA) and the SwiGLU activation of every MLP and
//              expert group (the gate/up GEMMs and swiglu) - Megatron's core_attn, mla_up_proj,
//              layernorm and mlp/moe_act recompute;
//   full:      each decoder block whole.
// The region's outputs in the forward are the ones the trainer sees (routing, expert counts):
// the recomputation's are discarded, so nothing is counted twice.
#pragma once

#include <torch/autograd.h>

#include <functional>
#include <string>

namespace latentmoe::model {

enum class Recompute { none, selective, full };

// "none" | "selective" | "full" (train.recompute).
Recompute parse_recompute(const std::string& name);

using Region = std::function<torch::autograd::variable_list(const torch::autograd::variable_list&)>;

// region(inputs), its activations recomputed in the backward. The region must be a pure function
// of its inputs and of module parameters (no randomness, no side effects that matter twice); the
// autocast state of the forward is restored for the recomputation.
torch::autograd::variable_list recomputed(const Region& region, const torch::autograd::variable_list& inputs);

// Whether a module should recompute now: a mode asks for it, the module trains and autograd records.
bool recompute_active(bool asked, bool training);

}  // namespace latentmoe::model
