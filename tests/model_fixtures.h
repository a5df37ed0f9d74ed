// Small model configs for tests: every architectural feature on, tiny sizes.
#pragma once

#include "latentmoe/config/config.h"

namespace latentmoe::testing {

inline config::ModelConfig tiny_model_config() {
  config::ModelConfig m;
  m.vocab_size = 61;
  m.hidden_size = 32;
  m.intermediate_size = 48;
  m.moe_intermediate_size = 16;
  m.num_hidden_layers = 3;
  m.num_attention_heads = 2;
  m.q_lora_rank = 24;
  m.kv_lora_rank = 12;
  m.qk_nope_head_dim = 8;
  m.qk_rope_head_dim = 4;
  m.v_head_dim = 6;
  m.n_routed_experts = 8;
  m.n_shared_experts = 1;
  m.num_experts_per_tok = 3;
  m.n_group = 4;
  m.topk_group = 2;
  m.first_k_dense_replace = 1;
  m.num_nextn_predict_layers = 1;
  m.init_std = 0.1;
  return m;
}

}  // namespace latentmoe::testing
