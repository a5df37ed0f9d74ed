// Small model configs for tests: every architectural feature on, tiny sizes.
#pragma once

#include "latentmoe/config/config.h"
#include "latentmoe/model/attention_settings.h"
#include "latentmoe/model/moe_settings.h"
#include "latentmoe/model/router_settings.h"

namespace latentmoe::testing {

inline config::ModelConfig tiny_model_config() {
  config::ModelConfig m;
  m.vocab_size = 61;
  m.hidden_size = 32;
  m.intermediate_size = 48;
  model::deepseek_moe_settings(m).moe_intermediate_size = 16;
  m.num_hidden_layers = 3;
  m.num_attention_heads = 2;
  model::MlaSettings& mla = model::mla_settings(m);
  mla.q_lora_rank = 24;
  mla.kv_lora_rank = 12;
  mla.qk_nope_head_dim = 8;
  mla.qk_rope_head_dim = 4;
  mla.v_head_dim = 6;
  m.n_routed_experts = 8;
  model::deepseek_moe_settings(m).n_shared_experts = 1;
  m.num_experts_per_tok = 3;
  model::deepseek_router_settings(m).n_group = 4;
  model::deepseek_router_settings(m).topk_group = 2;
  m.first_k_dense_replace = 1;
  m.num_nextn_predict_layers = 1;
  m.init_std = 0.1;
  return m;
}

// The Qwen3-MoE layout at tiny sizes: GQA (2 query heads per key/value head) with QK-norm and
// rotate-half RoPE, softmax top-k routing, no shared experts, one dense layer, no MTP.
inline config::ModelConfig tiny_qwen3_moe_config() {
  config::ModelConfig m = tiny_model_config();
  m.num_attention_heads = 4;
  m.attention.set_type("gqa");
  model::GqaSettings& gqa = model::gqa_settings(m);
  gqa.num_key_value_heads = 2;
  gqa.head_dim = 8;
  gqa.qk_norm = true;
  m.router.set_type("softmax_topk");
  model::deepseek_moe_settings(m).n_shared_experts = 0;
  m.norm_topk_prob = false;
  m.rope_interleave = false;
  m.num_nextn_predict_layers = 0;
  return m;
}

}  // namespace latentmoe::testing
