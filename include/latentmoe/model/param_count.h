// Parameter and FLOP counts from the config alone (no tensors): total, activated per token, the
// MTP modules separately, and forward FLOPs per token. One implementation serves
// `config --summary`, the trainer's MFU, `bench` and the cluster planner. No torch headers.
#pragma once

#include <cstdint>
#include <string>

#include "latentmoe/config/config.h"

namespace latentmoe::model {

struct ParameterCounts {
  int64_t embedding = 0;           // vocab x hidden
  int64_t head = 0;                // vocab x hidden (untied)
  int64_t attention = 0;           // all main blocks
  int64_t dense_ffn = 0;           // dense SwiGLU layers
  int64_t routed_experts = 0;      // all routed experts of all main MoE layers
  int64_t shared_experts = 0;
  int64_t routers = 0;             // gate weights (the correction bias is a buffer, not counted)
  int64_t norms = 0;               // block norms + final norm
  int64_t total = 0;               // main model
  int64_t activated = 0;           // per token: routed experts counted top-k of n only
  int64_t mtp_total = 0;           // MTP modules' own parameters (embedding/head are shared)
  int64_t mtp_activated = 0;
};

ParameterCounts count_parameters(const config::ModelConfig& cfg);

struct FlopCounts {
  double matmul = 0;     // 2 x activated matmul weights (head included, embedding lookup not)
  double attention = 0;  // QK^T and PV, causal: a token attends to (seq+1)/2 positions on average
  double forward = 0;    // matmul + attention, main model
  double mtp_forward = 0;
};

// Forward FLOPs per token for sequences of seq_len tokens (training costs ~3x forward).
FlopCounts forward_flops_per_token(const config::ModelConfig& cfg, int64_t seq_len);

// Forward FLOPs per token of main block `layer_index` alone (its matmuls and attention): the
// blocks' sum plus the head's 2 x vocab x hidden is FlopCounts::forward.
double block_forward_flops_per_token(const config::ModelConfig& cfg, int64_t layer_index, int64_t seq_len);

// Multi-line human summary for `latentmoe config --summary`.
std::string model_summary(const config::Config& cfg);

}  // namespace latentmoe::model
