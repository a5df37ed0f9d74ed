// The keys of the built-in attention types (`model.attention.type`), torch-free so that the
// config loader, the counters and the planner see them. Each struct is one type's section.
#pragma once

#include <cstdint>
#include <optional>

#include "latentmoe/config/config.h"
#include "latentmoe/config/layer_choice.h"

namespace latentmoe::model {

// `mla`: Multi-head Latent Attention (DeepSeek-V2/V3), HF DeepseekV3 key names.
struct MlaSettings : config::LayerSettingsOf<MlaSettings> {
  std::optional<int64_t> q_lora_rank = 64;
  int64_t kv_lora_rank = 32;
  int64_t qk_nope_head_dim = 32;
  int64_t qk_rope_head_dim = 16;
  int64_t v_head_dim = 32;
  void describe(config::FieldVisitor& v) override;
};

// `gqa`: grouped-query attention (Llama/Qwen3): num_key_value_heads key/value heads shared by
// groups of query heads, RoPE over the whole head, optional per-head RMSNorm on queries and keys.
struct GqaSettings : config::LayerSettingsOf<GqaSettings> {
  int64_t num_key_value_heads = 2;
  int64_t head_dim = 32;
  bool qk_norm = true;
  void describe(config::FieldVisitor& v) override;
};

inline const MlaSettings& mla_settings(const config::ModelConfig& m) { return m.attention.settings<MlaSettings>(); }
inline MlaSettings& mla_settings(config::ModelConfig& m) { return m.attention.settings<MlaSettings>(); }
inline const GqaSettings& gqa_settings(const config::ModelConfig& m) { return m.attention.settings<GqaSettings>(); }
inline GqaSettings& gqa_settings(config::ModelConfig& m) { return m.attention.settings<GqaSettings>(); }

}  // namespace latentmoe::model
