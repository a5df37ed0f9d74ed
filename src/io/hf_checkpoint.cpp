// HF transformers DeepseekV3 <-> latentmoe: config.json mapping, key renames for the MTP block
// (layer num_hidden_layers + k in HF/the release, "mtp.k." here), FP8 blockwise dequantization.
#include <ATen/ATen.h>
#include <fmt/format.h>

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <regex>

#include "latentmoe/io/model_io.h"
#include "latentmoe/io/safetensors.h"
#include "latentmoe/util/error.h"
#include "latentmoe/util/log.h"

namespace latentmoe::io {

namespace fs = std::filesystem;
using json = nlohmann::json;

namespace {

json read_json(const fs::path& path) {
  std::ifstream in(path);
  if (!in) throw ConfigError(fmt::format("{}: cannot open", path.string()));
  try {
    return json::parse(in);
  } catch (const json::exception& e) {
    throw ConfigError(fmt::format("{}: invalid JSON: {}", path.string(), e.what()));
  }
}

template <class T>
T get_or(const json& j, const std::string& key, T fallback, const std::string& file) {
  if (!j.contains(key) || j[key].is_null()) return fallback;
  try {
    return j[key].get<T>();
  } catch (const json::exception&) {
    throw ConfigError(fmt::format("{}: key '{}' has value {} of the wrong type", file, key, j[key].dump()));
  }
}

template <class T>
T require(const json& j, const std::string& key, const std::string& file) {
  if (!j.contains(key) || j[key].is_null()) throw ConfigError(fmt::format("{}: required key '{}' is missing", file, key));
  return get_or<T>(j, key, T{}, file);
}

// FP8 weight [out, in] with weight_scale_inv [ceil(out/b0), ceil(in/b1)] → fp32.
at::Tensor dequantize_fp8(const at::Tensor& weight, const at::Tensor& scale_inv, int64_t block0, int64_t block1,
                          const std::string& name) {
  TORCH_CHECK(weight.dim() == 2 && scale_inv.dim() == 2, name, ": FP8 weight and weight_scale_inv must be 2-D");
  const int64_t out = weight.size(0), in = weight.size(1);
  TORCH_CHECK(scale_inv.size(0) == (out + block0 - 1) / block0 && scale_inv.size(1) == (in + block1 - 1) / block1, name,
              ": weight_scale_inv shape ", scale_inv.sizes(), " does not tile weight ", weight.sizes(), " in ", block0,
              "x", block1, " blocks");
  const at::Tensor scale = scale_inv.to(at::kFloat).repeat_interleave(block0, 0).narrow(0, 0, out).repeat_interleave(block1, 1).narrow(1, 0, in);
  return weight.to(at::kFloat) * scale;
}

}  // namespace

namespace {
config::ModelConfig model_config_from_hf_json(const json& j, const std::string& file) {
  const std::string model_type = get_or<std::string>(j, "model_type", "", file);
  if (model_type != "deepseek_v3" && model_type != "deepseek_v2") {
    throw ConfigError(fmt::format("{}: model_type '{}' is not supported (expected 'deepseek_v3' or 'deepseek_v2')", file, model_type));
  }
  config::ModelConfig m;
  m.vocab_size = require<int64_t>(j, "vocab_size", file);
  m.hidden_size = require<int64_t>(j, "hidden_size", file);
  m.intermediate_size = require<int64_t>(j, "intermediate_size", file);
  m.moe_intermediate_size = require<int64_t>(j, "moe_intermediate_size", file);
  m.num_hidden_layers = require<int64_t>(j, "num_hidden_layers", file);
  m.num_attention_heads = require<int64_t>(j, "num_attention_heads", file);
  const int64_t kv_heads = get_or<int64_t>(j, "num_key_value_heads", m.num_attention_heads, file);
  if (kv_heads != m.num_attention_heads) {
    throw ConfigError(fmt::format("{}: num_key_value_heads ({}) != num_attention_heads ({}): MLA has no grouped KV heads",
                                  file, kv_heads, m.num_attention_heads));
  }
  m.q_lora_rank = j.contains("q_lora_rank") && !j["q_lora_rank"].is_null()
                      ? std::optional<int64_t>(require<int64_t>(j, "q_lora_rank", file))
                      : std::nullopt;
  m.kv_lora_rank = require<int64_t>(j, "kv_lora_rank", file);
  m.qk_nope_head_dim = require<int64_t>(j, "qk_nope_head_dim", file);
  m.qk_rope_head_dim = require<int64_t>(j, "qk_rope_head_dim", file);
  m.v_head_dim = require<int64_t>(j, "v_head_dim", file);
  m.n_routed_experts = get_or<int64_t>(j, "n_routed_experts", 0, file);
  m.n_shared_experts = get_or<int64_t>(j, "n_shared_experts", 0, file);
  m.num_experts_per_tok = get_or<int64_t>(j, "num_experts_per_tok", 1, file);
  m.n_group = get_or<int64_t>(j, "n_group", 1, file);
  m.topk_group = get_or<int64_t>(j, "topk_group", 1, file);
  m.routed_scaling_factor = get_or<double>(j, "routed_scaling_factor", 1.0, file);
  m.norm_topk_prob = get_or<bool>(j, "norm_topk_prob", model_type == "deepseek_v3", file);
  m.scoring_func = get_or<std::string>(j, "scoring_func", model_type == "deepseek_v3" ? "sigmoid" : "softmax", file);
  m.first_k_dense_replace = get_or<int64_t>(j, "first_k_dense_replace", 0, file);
  m.rms_norm_eps = get_or<double>(j, "rms_norm_eps", 1e-6, file);
  m.max_position_embeddings = get_or<int64_t>(j, "max_position_embeddings", 4096, file);
  m.rope_interleave = get_or<bool>(j, "rope_interleave", true, file);
  m.attention_bias = get_or<bool>(j, "attention_bias", false, file);
  m.num_nextn_predict_layers = get_or<int64_t>(j, "num_nextn_predict_layers", 0, file);
  m.init_std = get_or<double>(j, "initializer_range", m.init_std, file);
  if (get_or<bool>(j, "tie_word_embeddings", false, file)) {
    throw ConfigError(fmt::format("{}: tie_word_embeddings=true is not supported (DeepSeek models use an untied head)", file));
  }
  // v5 writes rope_parameters (with rope_theta inside); v4 writes rope_scaling + rope_theta.
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
  return m;
}
}  // namespace

config::ModelConfig model_config_from_hf(const std::string& hf_dir) {
  const fs::path path = fs::path(hf_dir) / "config.json";
  return model_config_from_hf_json(read_json(path), path.string());
}

model::DeepSeekV3 import_hf(const std::string& hf_dir, config::ModelConfig* cfg) {
  const fs::path cfg_file = fs::path(hf_dir) / "config.json";
  const json j = read_json(cfg_file);
  *cfg = model_config_from_hf_json(j, cfg_file.string());
  int64_t block0 = 128, block1 = 128;
  if (j.contains("quantization_config") && j["quantization_config"].contains("weight_block_size")) {
    const auto& b = j["quantization_config"]["weight_block_size"];
    block0 = b.at(0).get<int64_t>();
    block1 = b.at(1).get<int64_t>();
  }
  std::map<std::string, at::Tensor> hf = load_safetensors_dir(hf_dir);
  const int64_t layers = cfg->num_hidden_layers;
  const std::regex layer_key(R"(model\.layers\.(\d+)\.(.+))");
  std::map<std::string, at::Tensor> ours;
  bool has_mtp = false;
  for (auto& [name, tensor] : hf) {
    if (name.size() > 17 && name.compare(name.size() - 17, 17, ".weight_scale_inv") == 0) continue;
    at::Tensor value = tensor;
    if (value.scalar_type() == at::kFloat8_e4m3fn || value.scalar_type() == at::kFloat8_e5m2) {
      const std::string scale_name = name.substr(0, name.size() - std::string("weight").size()) + "weight_scale_inv";
      const auto scale = hf.find(scale_name);
      if (scale == hf.end()) {
        throw SafetensorsError(fmt::format("{}: FP8 tensor '{}' has no '{}'", hf_dir, name, scale_name));
      }
      value = dequantize_fp8(value, scale->second, block0, block1, name);
    }
    std::smatch match;
    std::string target = name;
    if (std::regex_match(name, match, layer_key) && std::stoll(match[1]) >= layers) {
      const int64_t k = std::stoll(match[1]) - layers;
      const std::string rest = match[2];
      if (rest == "embed_tokens.weight" || rest == "shared_head.head.weight") continue;  // shared with the main model
      has_mtp = true;
      if (rest == "shared_head.norm.weight") {
        target = fmt::format("mtp.{}.norm.weight", k);
      } else if (rest.rfind("enorm.", 0) == 0 || rest.rfind("hnorm.", 0) == 0 || rest.rfind("eh_proj.", 0) == 0) {
        target = fmt::format("mtp.{}.{}", k, rest);
      } else {
        target = fmt::format("mtp.{}.block.{}", k, rest);
      }
    }
    ours.emplace(target, value.to(at::kFloat));
  }
  if (!has_mtp && cfg->num_nextn_predict_layers > 0) {
    LMOE_WARN("{}: no MTP weights (model.layers.{}.*) in the checkpoint: importing with model.num_nextn_predict_layers=0",
              hf_dir, layers);
    cfg->num_nextn_predict_layers = 0;
  }
  model::DeepSeekV3 m(*cfg);
  load_model_state(*m, ours, hf_dir);
  return m;
}

void export_hf(const std::string& out_dir, const config::ModelConfig& m, model::DeepSeekV3Impl& model, bool include_mtp) {
  if (m.scoring_func != "sigmoid") {
    throw ConfigError(fmt::format("model.scoring_func '{}' has no equivalent in transformers' DeepseekV3 (sigmoid only)",
                                  m.scoring_func));
  }
  fs::create_directories(out_dir);
  json rope_scaling = nullptr;
  json rope_parameters = {{"rope_type", "default"}, {"rope_theta", m.rope_theta}};
  if (m.rope_scaling.type == "yarn") {
    const auto& y = m.rope_scaling;
    rope_scaling = {{"type", "yarn"},        {"rope_type", "yarn"},       {"factor", y.factor},
                    {"original_max_position_embeddings", y.original_max_position_embeddings},
                    {"beta_fast", y.beta_fast}, {"beta_slow", y.beta_slow}, {"mscale", y.mscale},
                    {"mscale_all_dim", y.mscale_all_dim}};
    rope_parameters = rope_scaling;
    rope_parameters.erase("type");
    rope_parameters["rope_theta"] = m.rope_theta;
  }
  const json config = {
      {"architectures", {"DeepseekV3ForCausalLM"}},
      {"model_type", "deepseek_v3"},
      {"vocab_size", m.vocab_size},
      {"hidden_size", m.hidden_size},
      {"intermediate_size", m.intermediate_size},
      {"moe_intermediate_size", m.moe_intermediate_size},
      {"num_hidden_layers", m.num_hidden_layers},
      {"num_attention_heads", m.num_attention_heads},
      {"num_key_value_heads", m.num_attention_heads},
      {"q_lora_rank", m.q_lora_rank ? json(*m.q_lora_rank) : json(nullptr)},
      {"kv_lora_rank", m.kv_lora_rank},
      {"qk_nope_head_dim", m.qk_nope_head_dim},
      {"qk_rope_head_dim", m.qk_rope_head_dim},
      {"v_head_dim", m.v_head_dim},
      {"n_routed_experts", m.n_routed_experts},
      {"n_shared_experts", m.n_shared_experts},
      {"num_experts_per_tok", m.num_experts_per_tok},
      {"n_group", m.n_group},
      {"topk_group", m.topk_group},
      {"routed_scaling_factor", m.routed_scaling_factor},
      {"norm_topk_prob", m.norm_topk_prob},
      {"first_k_dense_replace", m.first_k_dense_replace},
      {"scoring_func", m.scoring_func},
      {"topk_method", "noaux_tc"},
      {"hidden_act", "silu"},
      {"rms_norm_eps", m.rms_norm_eps},
      {"max_position_embeddings", m.max_position_embeddings},
      {"rope_theta", m.rope_theta},
      {"rope_scaling", rope_scaling},
      {"rope_parameters", rope_parameters},
      {"rope_interleave", m.rope_interleave},
      {"attention_bias", m.attention_bias},
      {"attention_dropout", 0.0},
      {"tie_word_embeddings", false},
      {"num_nextn_predict_layers", include_mtp ? m.num_nextn_predict_layers : 0},
      {"initializer_range", m.init_std},
      {"torch_dtype", "float32"},
      {"dtype", "float32"},
  };
  std::ofstream((fs::path(out_dir) / "config.json").string()) << config.dump(2) << "\n";

  std::vector<std::pair<std::string, at::Tensor>> tensors;
  const auto state = model_state(model);
  const std::regex mtp_key(R"(mtp\.(\d+)\.(.+))");
  for (const auto& [name, t] : state) {
    std::smatch match;
    if (!std::regex_match(name, match, mtp_key)) {
      tensors.emplace_back(name, t);
      continue;
    }
    if (!include_mtp) continue;
    const int64_t layer = m.num_hidden_layers + std::stoll(match[1]);
    std::string rest = match[2];
    if (rest.rfind("block.", 0) == 0) rest = rest.substr(6);
    if (rest == "norm.weight") rest = "shared_head.norm.weight";
    tensors.emplace_back(fmt::format("model.layers.{}.{}", layer, rest), t);
  }
  if (include_mtp) {
    for (int64_t k = 0; k < m.num_nextn_predict_layers; ++k) {
      const int64_t layer = m.num_hidden_layers + k;
      tensors.emplace_back(fmt::format("model.layers.{}.embed_tokens.weight", layer), state.at("model.embed_tokens.weight"));
      tensors.emplace_back(fmt::format("model.layers.{}.shared_head.head.weight", layer), state.at("lm_head.weight"));
    }
  }
  save_safetensors((fs::path(out_dir) / "model.safetensors").string(), tensors, {{"format", "pt"}});
}

}  // namespace latentmoe::io
