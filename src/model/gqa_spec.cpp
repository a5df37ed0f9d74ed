// `model.attention.type: gqa`, its torch-free half: keys, counter, rules. The module is
// src/model/gqa.cpp.
#include <fmt/format.h>

#include "latentmoe/model/attention_settings.h"
#include "latentmoe/model/checked_count.h"

namespace latentmoe::model {

void GqaSettings::describe(config::FieldVisitor& v) {
  v.field({"num_key_value_heads", &num_key_value_heads,
           "Key/value heads; each serves num_attention_heads / num_key_value_heads query heads"});
  v.field({"head_dim", &head_dim, "Per-head query/key/value dims (RoPE rotates all of them)"});
  v.field({"qk_norm", &qk_norm, "RMSNorm over each query and key head before RoPE (Qwen3's q_norm/k_norm)"});
}

namespace {

config::LayerCounts count_gqa(const config::ModelConfig& m) {
  const GqaSettings& a = gqa_settings(m);
  const Count hidden = m.hidden_size, bias = m.attention_bias ? 1 : 0;
  const Count q = Count(m.num_attention_heads) * a.head_dim, kv = Count(a.num_key_value_heads) * a.head_dim;
  const Count norms = a.qk_norm ? Count(2) * a.head_dim : Count(0);
  // q, k, v projections (+ their biases), o_proj (+ bias), q_norm and k_norm.
  const Count n = hidden * q + bias * q + Count(2) * (hidden * kv + bias * kv) + q * hidden + bias * hidden + norms;
  return {.parameters = n.value(), .norm_parameters = norms.value(), .score_width = (Count(2) * q).value()};
}

void validate_gqa(const config::ModelConfig& m, std::vector<std::string>& out) {
  const GqaSettings& a = gqa_settings(m);
  if (a.head_dim <= 0 || a.head_dim % 2 != 0) {
    out.push_back(fmt::format("model.attention.head_dim must be > 0 and even (RoPE rotates pairs), got {}", a.head_dim));
  }
  if (a.num_key_value_heads <= 0 || m.num_attention_heads % std::max<int64_t>(a.num_key_value_heads, 1) != 0) {
    out.push_back(fmt::format("model.attention.num_key_value_heads ({}) must be > 0 and divide model.num_attention_heads "
                              "({})",
                              a.num_key_value_heads, m.num_attention_heads));
  }
  if (m.rope_scaling.type != "none") {
    out.push_back(fmt::format("model.rope_scaling.type '{}' is not implemented for model.attention.type 'gqa' "
                              "(allowed: none)",
                              m.rope_scaling.type));
  }
}

const bool registered = [] {
  config::register_layer_type({.family = "attention",
                               .name = "gqa",
                               .doc = "Grouped-query attention (Llama, Qwen3): shared key/value heads, RoPE over the "
                                      "head, optional QK-norm; the cache holds keys and values",
                               .make_settings = [] { return std::make_unique<GqaSettings>(); },
                               .count = count_gqa,
                               .validate = validate_gqa});
  return true;
}();

}  // namespace

}  // namespace latentmoe::model
