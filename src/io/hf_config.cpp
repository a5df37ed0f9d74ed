// HF transformers config.json (DeepseekV3 / DeepseekV2 / Qwen3Moe) -> latentmoe ModelConfig. Torch-free.
#include "latentmoe/io/hf_config.h"

#include <fmt/format.h>

#include <filesystem>
#include <fstream>
#include <limits>
#include <nlohmann/json.hpp>
#include <type_traits>

#include "latentmoe/model/attention_settings.h"
#include "latentmoe/model/moe_settings.h"
#include "latentmoe/model/router_settings.h"
#include "latentmoe/util/error.h"
#include "latentmoe/util/atomic_file.h"

namespace latentmoe::io {

namespace fs = std::filesystem;
using json = nlohmann::json;

namespace {

json parse_json(std::string_view text, const std::string& file) {
  try {
    return json::parse(text.begin(), text.end());
  } catch (const json::exception& e) {
    throw ConfigError(fmt::format("{}: invalid JSON: {}", file, e.what()));
  }
}

template <class T>
T get_or(const json& j, const std::string& key, T fallback, const std::string& file) {
  if (!j.contains(key) || j[key].is_null()) return fallback;
  const json& value = j[key];
  // nlohmann converts 3.5 to 3 and 2^64-1 to -1 for integers; a config.json value must be exact.
  if constexpr (std::is_integral_v<T> && !std::is_same_v<T, bool>) {
    if (!value.is_number_integer() || (value.is_number_unsigned() && value.get<uint64_t>() > static_cast<uint64_t>(std::numeric_limits<T>::max()))) {
      throw ConfigError(fmt::format("{}: key '{}' must be an integer, got {}", file, key, value.dump()));
    }
  }
  try {
    return value.get<T>();
  } catch (const json::exception&) {
    throw ConfigError(fmt::format("{}: key '{}' has value {} of the wrong type", file, key, j[key].dump()));
  }
}

template <class T>
T require(const json& j, const std::string& key, const std::string& file) {
  if (!j.contains(key) || j[key].is_null()) throw ConfigError(fmt::format("{}: required key '{}' is missing", file, key));
  return get_or<T>(j, key, T{}, file);
}

// The rotary parameters: v5 writes rope_parameters (with rope_theta inside); v4 writes
// rope_scaling + rope_theta.
void read_rope(const json& j, const std::string& file, config::ModelConfig& m) {
  const json rope = j.contains("rope_parameters") && j["rope_parameters"].is_object() ? j["rope_parameters"]
                    : (j.contains("rope_scaling") && j["rope_scaling"].is_object() ? j["rope_scaling"] : json::object());
  m.rope_theta = get_or<double>(rope, "rope_theta", get_or<double>(j, "rope_theta", 10000.0, file), file);
  std::string type = get_or<std::string>(rope, "rope_type", get_or<std::string>(rope, "type", "default", file), file);
  if (type == "yarn") {
    m.rope_scaling.type = "yarn";
    m.rope_scaling.factor = require<double>(rope, "factor", file + " rope parameters");
    m.rope_scaling.original_max_position_embeddings =
        require<int64_t>(rope, "original_max_position_embeddings", file + " rope parameters");
    m.rope_scaling.beta_fast = get_or<double>(rope, "beta_fast", 32.0, file);
    m.rope_scaling.beta_slow = get_or<double>(rope, "beta_slow", 1.0, file);
    m.rope_scaling.mscale = get_or<double>(rope, "mscale", 0.0, file);
    m.rope_scaling.mscale_all_dim = get_or<double>(rope, "mscale_all_dim", 0.0, file);
  } else if (type != "default") {
    throw ConfigError(fmt::format("{}: rope type '{}' is not supported (supported: default, yarn)", file, type));
  }
}

// Keys every supported architecture spells the same way.
void read_common(const json& j, const std::string& file, config::ModelConfig& m) {
  m.vocab_size = require<int64_t>(j, "vocab_size", file);
  m.hidden_size = require<int64_t>(j, "hidden_size", file);
  m.intermediate_size = require<int64_t>(j, "intermediate_size", file);
  m.ffn.set_type("deepseek_moe");
  model::deepseek_moe_settings(m).moe_intermediate_size = require<int64_t>(j, "moe_intermediate_size", file);
  m.num_hidden_layers = require<int64_t>(j, "num_hidden_layers", file);
  m.num_attention_heads = require<int64_t>(j, "num_attention_heads", file);
  m.num_experts_per_tok = get_or<int64_t>(j, "num_experts_per_tok", 1, file);
  m.rms_norm_eps = get_or<double>(j, "rms_norm_eps", 1e-6, file);
  m.max_position_embeddings = get_or<int64_t>(j, "max_position_embeddings", 4096, file);
  m.attention_bias = get_or<bool>(j, "attention_bias", false, file);
  m.init_std = get_or<double>(j, "initializer_range", m.init_std, file);
  if (get_or<bool>(j, "tie_word_embeddings", false, file)) {
    throw ConfigError(fmt::format("{}: tie_word_embeddings=true is not supported (latentmoe's head is untied)", file));
  }
  const std::string act = get_or<std::string>(j, "hidden_act", "silu", file);
  if (act != "silu") throw ConfigError(fmt::format("{}: hidden_act '{}' is not supported (supported: silu)", file, act));
  read_rope(j, file, m);
}

config::ModelConfig deepseek_from_hf_json(const json& j, const std::string& file, const std::string& model_type) {
  config::ModelConfig m;
  read_common(j, file, m);
  const int64_t kv_heads = get_or<int64_t>(j, "num_key_value_heads", m.num_attention_heads, file);
  if (kv_heads != m.num_attention_heads) {
    throw ConfigError(fmt::format("{}: num_key_value_heads ({}) != num_attention_heads ({}): MLA has no grouped KV heads",
                                  file, kv_heads, m.num_attention_heads));
  }
  m.attention.set_type("mla");
  model::MlaSettings& a = model::mla_settings(m);
  a.q_lora_rank = j.contains("q_lora_rank") && !j["q_lora_rank"].is_null()
                      ? std::optional<int64_t>(require<int64_t>(j, "q_lora_rank", file))
                      : std::nullopt;
  a.kv_lora_rank = require<int64_t>(j, "kv_lora_rank", file);
  a.qk_nope_head_dim = require<int64_t>(j, "qk_nope_head_dim", file);
  a.qk_rope_head_dim = require<int64_t>(j, "qk_rope_head_dim", file);
  a.v_head_dim = require<int64_t>(j, "v_head_dim", file);
  m.n_routed_experts = get_or<int64_t>(j, "n_routed_experts", 0, file);
  model::deepseek_moe_settings(m).n_shared_experts = get_or<int64_t>(j, "n_shared_experts", 0, file);
  m.router.set_type("deepseek_v3");
  model::DeepSeekRouterSettings& r = model::deepseek_router_settings(m);
  r.n_group = get_or<int64_t>(j, "n_group", 1, file);
  r.topk_group = get_or<int64_t>(j, "topk_group", 1, file);
  r.routed_scaling_factor = get_or<double>(j, "routed_scaling_factor", 1.0, file);
  m.norm_topk_prob = get_or<bool>(j, "norm_topk_prob", model_type == "deepseek_v3", file);
  r.scoring_func = get_or<std::string>(j, "scoring_func", model_type == "deepseek_v3" ? "sigmoid" : "softmax", file);
  m.first_k_dense_replace = get_or<int64_t>(j, "first_k_dense_replace", 0, file);
  m.rope_interleave = get_or<bool>(j, "rope_interleave", true, file);
  m.num_nextn_predict_layers = get_or<int64_t>(j, "num_nextn_predict_layers", 0, file);
  return m;
}

// Qwen3-MoE: GQA with QK-norm and rotate-half RoPE, softmax top-k routing, no shared experts.
config::ModelConfig qwen3_moe_from_hf_json(const json& j, const std::string& file) {
  config::ModelConfig m;
  read_common(j, file, m);
  m.attention.set_type("gqa");
  model::GqaSettings& a = model::gqa_settings(m);
  a.num_key_value_heads = get_or<int64_t>(j, "num_key_value_heads", m.num_attention_heads, file);
  a.head_dim = get_or<int64_t>(j, "head_dim", m.num_attention_heads > 0 ? m.hidden_size / m.num_attention_heads : 0, file);
  a.qk_norm = true;
  m.router.set_type("softmax_topk");
  // v5 names the expert count num_local_experts, v4 num_experts; transformers' defaults otherwise.
  m.n_routed_experts = get_or<int64_t>(j, "num_local_experts", get_or<int64_t>(j, "num_experts", 128, file), file);
  m.num_experts_per_tok = get_or<int64_t>(j, "num_experts_per_tok", 8, file);
  m.max_position_embeddings = get_or<int64_t>(j, "max_position_embeddings", 32768, file);
  model::deepseek_moe_settings(m).n_shared_experts = 0;
  m.norm_topk_prob = get_or<bool>(j, "norm_topk_prob", false, file);
  m.rope_interleave = false;
  m.num_nextn_predict_layers = 0;
  if (get_or<bool>(j, "use_sliding_window", false, file)) {
    throw ConfigError(fmt::format("{}: use_sliding_window=true is not supported", file));
  }
  // Dense layers must be a leading block (first_k_dense_replace): every layer sparse, or the
  // first k listed in mlp_only_layers.
  if (const int64_t step = get_or<int64_t>(j, "decoder_sparse_step", 1, file); step != 1) {
    throw ConfigError(fmt::format("{}: decoder_sparse_step {} is not supported (supported: 1)", file, step));
  }
  const std::vector<int64_t> dense = get_or<std::vector<int64_t>>(j, "mlp_only_layers", {}, file);
  for (size_t i = 0; i < dense.size(); ++i) {
    if (dense[i] != static_cast<int64_t>(i)) {
      throw ConfigError(fmt::format("{}: mlp_only_layers {} is not supported: dense layers must be the leading ones "
                                    "(0, 1, ..., k-1)",
                                    file, json(dense).dump()));
    }
  }
  m.first_k_dense_replace = static_cast<int64_t>(dense.size());
  return m;
}

config::ModelConfig model_config_from_hf_json(const json& j, const std::string& file) {
  const std::string model_type = get_or<std::string>(j, "model_type", "", file);
  if (model_type == "deepseek_v3" || model_type == "deepseek_v2") return deepseek_from_hf_json(j, file, model_type);
  if (model_type == "qwen3_moe") return qwen3_moe_from_hf_json(j, file);
  throw ConfigError(fmt::format("{}: model_type '{}' is not supported (supported: deepseek_v3, deepseek_v2, qwen3_moe)",
                                file, model_type));
}

}  // namespace

HfConfig parse_hf_config(std::string_view text, const std::string& file) {
  const json j = parse_json(text, file);
  if (!j.is_object()) throw ConfigError(fmt::format("{}: must be a JSON object, got {}", file, j.type_name()));
  HfConfig out;
  out.model = model_config_from_hf_json(j, file);
  if (j.contains("quantization_config") && !j["quantization_config"].is_null()) {
    const json& q = j["quantization_config"];
    if (!q.is_object()) throw ConfigError(fmt::format("{}: quantization_config must be an object", file));
    if (q.contains("weight_block_size") && !q["weight_block_size"].is_null()) {
      const json& b = q["weight_block_size"];
      const auto positive = [](const json& v) { return v.is_number_integer() && v.get<int64_t>() > 0 && v.get<int64_t>() <= (1 << 20); };
      if (!b.is_array() || b.size() != 2 || !positive(b[0]) || !positive(b[1])) {
        throw ConfigError(fmt::format("{}: quantization_config.weight_block_size must be two positive integers, got {}",
                                      file, b.dump()));
      }
      out.fp8_block_rows = b[0].get<int64_t>();
      out.fp8_block_cols = b[1].get<int64_t>();
    }
  }
  return out;
}

HfConfig read_hf_config(const std::string& hf_dir) {
  const std::string path = (fs::path(hf_dir) / "config.json").string();
  const std::optional<std::string> text = read_text_file(path);
  if (!text) throw ConfigError(fmt::format("{}: cannot open", path));
  return parse_hf_config(*text, path);
}

config::ModelConfig model_config_from_hf(const std::string& hf_dir) { return read_hf_config(hf_dir).model; }

}  // namespace latentmoe::io
