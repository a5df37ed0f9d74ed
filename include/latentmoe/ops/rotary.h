// rotary_embedding: rotates the rope part of queries/keys by per-position angles in one pass.
// Input pairs are (x[2i], x[2i+1]) when interleaved (DeepSeek's released layout) or (x[i],
// x[i+R/2]); the output is always in half layout [x1*c - x2*s | x2*c + x1*s], as HF's
// apply_rotary_pos_emb_interleave returns it (queries and keys get the same permutation, so the
// attention scores equal those of the interleaved form). Registered as
// torch.ops.latentmoe.rotary_embedding (CPU, CUDA and Autograd kernels).
#pragma once

#include <ATen/core/Tensor.h>

namespace latentmoe::ops {

// x [B, H, S, R] (any strides), cos/sin [B or 1, S, R/2] (fp32, YaRN's attention factor already
// applied). Returns a contiguous [B, H, S, R] tensor of x's dtype; differentiable in x.
at::Tensor rotary_embedding(const at::Tensor& x, const at::Tensor& cos, const at::Tensor& sin, bool interleaved);

// The specification in plain ATen ops.
at::Tensor rotary_embedding_reference(const at::Tensor& x, const at::Tensor& cos, const at::Tensor& sin,
                                      bool interleaved);

}  // namespace latentmoe::ops
