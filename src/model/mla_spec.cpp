// `model.attention.type: mla`, its torch-free half: keys, counter, rules. The module is
// src/model/mla.cpp.
#include <fmt/format.h>

#include "latentmoe/model/attention_settings.h"
#include "latentmoe/model/checked_count.h"

namespace latentmoe::model {

void MlaSettings::describe(config::FieldVisitor& v) {
  v.field({"q_lora_rank", &q_lora_rank, "Query compression rank; null = plain q projection (V2-Lite)"});
  v.field({"kv_lora_rank", &kv_lora_rank, "Key/value latent width (what the inference cache stores)"});
  v.field({"qk_nope_head_dim", &qk_nope_head_dim, "Per-head query/key dims without rotary embedding"});
  v.field({"qk_rope_head_dim", &qk_rope_head_dim,
           "Per-head query rotary dims; also the width of the one rotary key shared by all heads"});
  v.field({"v_head_dim", &v_head_dim, "Per-head value dims"});
}

namespace {

config::LayerCounts count_mla(const config::ModelConfig& m) {
  const MlaSettings& a = mla_settings(m);
  const Count heads = m.num_attention_heads, qk = Count(a.qk_nope_head_dim) + a.qk_rope_head_dim;
  const Count hidden = m.hidden_size, bias = m.attention_bias ? 1 : 0;
  Count n, norms;
  if (a.q_lora_rank) {
    const Count r = *a.q_lora_rank;
    n += hidden * r + bias * r + r + r * heads * qk;  // q_a, its bias, q_a_layernorm, q_b
    norms += r;
  } else {
    n += hidden * heads * qk;
  }
  const Count kv_a = Count(a.kv_lora_rank) + a.qk_rope_head_dim;
  n += hidden * kv_a + bias * kv_a + a.kv_lora_rank;                                 // kv_a (+bias), kv_a_layernorm
  n += Count(a.kv_lora_rank) * heads * (Count(a.qk_nope_head_dim) + a.v_head_dim);  // kv_b
  n += heads * a.v_head_dim * hidden + bias * hidden;                                // o_proj
  norms += a.kv_lora_rank;
  return {.parameters = n.value(),
          .norm_parameters = norms.value(),
          .score_width = (heads * (qk + a.v_head_dim)).value()};
}

void validate_mla(const config::ModelConfig& m, std::vector<std::string>& out) {
  const MlaSettings& a = mla_settings(m);
  const auto positive = [&out](int64_t value, const char* key) {
    if (value <= 0) out.push_back(fmt::format("model.attention.{} must be > 0, got {}", key, value));
  };
  positive(a.kv_lora_rank, "kv_lora_rank");
  positive(a.qk_rope_head_dim, "qk_rope_head_dim");
  positive(a.v_head_dim, "v_head_dim");
  if (a.qk_nope_head_dim < 0) out.push_back(fmt::format("model.attention.qk_nope_head_dim must be >= 0, got {}", a.qk_nope_head_dim));
  if (a.qk_rope_head_dim % 2 != 0) {
    out.push_back(fmt::format("model.attention.qk_rope_head_dim must be even (rotary dims come in pairs), got {}",
                              a.qk_rope_head_dim));
  }
  if (a.q_lora_rank && *a.q_lora_rank <= 0) {
    out.push_back(fmt::format("model.attention.q_lora_rank must be > 0 (use null for no query compression), got {}",
                              *a.q_lora_rank));
  }
}

const bool registered = [] {
  config::register_layer_type({.family = "attention",
                               .name = "mla",
                               .doc = "Multi-head Latent Attention (DeepSeek-V2/V3): low-rank query and key/value "
                                      "latents, decoupled RoPE; the cache holds the latent",
                               .make_settings = [] { return std::make_unique<MlaSettings>(); },
                               .count = count_mla,
                               .validate = validate_mla});
  return true;
}();

}  // namespace

}  // namespace latentmoe::model
