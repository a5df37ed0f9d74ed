// linear_cross_entropy: the LM head and its cross entropy in one op, chunked over rows, so the
// full [rows, vocab] logits (and their fp32 copy, log-softmax and gradient) never exist at once.
// The forward computes each chunk's logits, loss and - when a gradient is needed - the chunk's
// contribution to d(hidden) and d(weight) right away; the backward only scales them. Registered as
// torch.ops.latentmoe.linear_cross_entropy (Autograd, and a device-generic body whose per-row
// softmax step is the op cross_entropy_rows: CPU kernel, ATen elsewhere).
#pragma once

#include <ATen/core/Tensor.h>

namespace latentmoe::ops {

// hidden [N, H], weight [V, H] (same dtype: the compute dtype), labels [N] int64 in [0, V) or
// ignore_index. Returns the SUM of the per-row cross entropies over the rows that count (fp32
// scalar). chunk_rows 0 = rows per chunk such that one chunk's logits take about 64 MB in fp32.
at::Tensor linear_cross_entropy(const at::Tensor& hidden, const at::Tensor& weight, const at::Tensor& labels,
                                int64_t ignore_index, int64_t chunk_rows = 0);

// The specification: logits = hidden @ weight^T in full, fp32 log-softmax, summed NLL.
at::Tensor linear_cross_entropy_reference(const at::Tensor& hidden, const at::Tensor& weight, const at::Tensor& labels,
                                          int64_t ignore_index);

}  // namespace latentmoe::ops
