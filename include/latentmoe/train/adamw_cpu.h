// One-pass AdamW update on the CPU (AVX-512): reads the parameter, gradient and both moments
// once and writes them once, where the ATen formulation makes eight passes and two temporaries.
#pragma once

#include <torch/types.h>

namespace latentmoe::train {

struct AdamWScalars {
  float decay_factor;  // 1 - lr * weight_decay (1 when the parameter does not decay)
  float one_minus_beta1, beta2, one_minus_beta2;
  float inv_sqrt_bias_correction2, eps, neg_step_size;  // -lr / (1 - beta1^t)
  float grad_scale;                                     // gradient clipping's factor, else 1
};

// True when the fused update applies: a CPU with AVX-512 and fp32 contiguous CPU tensors (the
// master weights' gradients are fp32 under bf16 compute too).
bool adamw_cpu_applies(const torch::Tensor& param, const torch::Tensor& grad, const torch::Tensor& exp_avg,
                       const torch::Tensor& exp_avg_sq);

// In place on param, exp_avg and exp_avg_sq (1-D views of equal length), elementwise:
//   g = grad * grad_scale; param *= decay_factor; exp_avg += (g - exp_avg) * (1 - beta1);
//   exp_avg_sq = exp_avg_sq * beta2 + (1 - beta2) * g * g;
//   param += neg_step_size * exp_avg / (sqrt(exp_avg_sq) * inv_sqrt_bias_correction2 + eps).
// Each element's result depends on nothing but its own inputs (no scalar tail, no chunk
// boundaries), so a ZeRO-1 shard updates exactly as the replicated tensor does.
void adamw_cpu_update(torch::Tensor& param, const torch::Tensor& grad, torch::Tensor& exp_avg,
                      torch::Tensor& exp_avg_sq, const AdamWScalars& s);

// Sum of squares of an fp32 CPU tensor in double precision, in one pass (the gradient norm reads
// each gradient once instead of converting it to a double copy first). Serial and in a fixed
// order, so the value does not depend on the thread count. Requires adamw_cpu_applies-like
// conditions: AVX-512, fp32, contiguous; `squared_norm_cpu_applies` says so.
bool squared_norm_cpu_applies(const torch::Tensor& t);
double squared_norm_cpu(const torch::Tensor& t);

}  // namespace latentmoe::train
