// HF transformers DeepseekV3 <-> latentmoe: config.json mapping, key renames for the MTP block
// (layer num_hidden_layers + k in HF/the release, "mtp.k." here), FP8 blockwise dequantization.
#include <ATen/ATen.h>
#include <fmt/format.h>

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <regex>
#include <set>

#include "latentmoe/io/hf_config.h"
#include "latentmoe/model/attention_settings.h"
#include "latentmoe/model/moe_settings.h"
#include "latentmoe/model/router_settings.h"
#include "latentmoe/io/model_io.h"
#include "latentmoe/io/safetensors.h"
#include "latentmoe/ops/fp8.h"
#include "latentmoe/util/error.h"
#include "latentmoe/util/log.h"

namespace latentmoe::io {

namespace fs = std::filesystem;
using json = nlohmann::json;

namespace {

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

// The weights of the projections inside decoder blocks, in HF names (MTP blocks at layer
// num_hidden_layers + k): what precision.fp8 trains in FP8 and the release stores in FP8.
std::set<std::string> fp8_weight_names(model::DeepSeekV3Impl& model, const config::ModelConfig& m) {
  std::set<std::string> names;
  const std::regex mtp_block(R"(mtp\.(\d+)\.block\.(.+))");
  model.for_each_block_module([&](const std::string& path, torch::nn::Module& module) {
    if (!dynamic_cast<model::LinearImpl*>(&module)) return;
    std::string name = path + ".weight";
    std::smatch match;
    if (std::regex_match(name, match, mtp_block)) {
      name = fmt::format("model.layers.{}.{}", m.num_hidden_layers + std::stoll(match[1]), std::string(match[2]));
    }
    names.insert(name);
  });
  return names;
}

// e4m3 + weight_scale_inv for the FP8 names, bf16 for the rest.
std::vector<std::pair<std::string, at::Tensor>> fp8_release_tensors(
    const std::vector<std::pair<std::string, at::Tensor>>& tensors, const std::set<std::string>& fp8_names) {
  std::vector<std::pair<std::string, at::Tensor>> out;
  for (const auto& [name, t] : tensors) {
    if (!fp8_names.count(name)) {
      out.emplace_back(name, t.is_floating_point() ? t.to(at::kBFloat16) : t);
      continue;
    }
    const ops::fp8::Quantized q = ops::fp8::quantize_blocks(t.to(at::kFloat), /*pow2_scales=*/false);
    TORCH_CHECK(at::isfinite(q.scales).all().item<bool>(), name, ": not finite, cannot be quantized to FP8");
    out.emplace_back(name, q.data);
    out.emplace_back(name.substr(0, name.size() - std::string("weight").size()) + "weight_scale_inv", q.scales);
  }
  return out;
}

}  // namespace

model::DeepSeekV3 import_hf(const std::string& hf_dir, config::ModelConfig* cfg) {
  const HfConfig hf_config = read_hf_config(hf_dir);
  *cfg = hf_config.model;
  const int64_t block0 = hf_config.fp8_block_rows, block1 = hf_config.fp8_block_cols;
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
  if (hf_config.model.router.type() == "softmax_topk") {
    // Qwen3Moe has no routing bias; ours starts at zero, where it steers nothing.
    for (const auto& [name, t] : model_state(*m)) {
      if (name.size() > 24 && name.compare(name.size() - 24, 24, ".e_score_correction_bias") == 0) {
        ours.emplace(name, at::zeros_like(t));
      }
    }
  }
  load_model_state(*m, ours, hf_dir);
  return m;
}

namespace {

json rope_json(const config::ModelConfig& m, json* rope_scaling) {
  *rope_scaling = nullptr;
  json rope_parameters = {{"rope_type", "default"}, {"rope_theta", m.rope_theta}};
  if (m.rope_scaling.type == "yarn") {
    const auto& y = m.rope_scaling;
    *rope_scaling = {{"type", "yarn"},        {"rope_type", "yarn"},       {"factor", y.factor},
                     {"original_max_position_embeddings", y.original_max_position_embeddings},
                     {"beta_fast", y.beta_fast}, {"beta_slow", y.beta_slow}, {"mscale", y.mscale},
                     {"mscale_all_dim", y.mscale_all_dim}};
    rope_parameters = *rope_scaling;
    rope_parameters.erase("type");
    rope_parameters["rope_theta"] = m.rope_theta;
  }
  return rope_parameters;
}

// The keys both exported architectures share, with the same meaning.
json common_decoder_config(const config::ModelConfig& m) {
  return {
      {"vocab_size", m.vocab_size},
      {"hidden_size", m.hidden_size},
      {"intermediate_size", m.intermediate_size},
      {"moe_intermediate_size", model::deepseek_moe_settings(m).moe_intermediate_size},
      {"num_hidden_layers", m.num_hidden_layers},
      {"num_attention_heads", m.num_attention_heads},
      {"num_experts_per_tok", m.num_experts_per_tok},
      {"norm_topk_prob", m.norm_topk_prob},
      {"hidden_act", "silu"},
      {"rms_norm_eps", m.rms_norm_eps},
      {"max_position_embeddings", m.max_position_embeddings},
      {"rope_theta", m.rope_theta},
      {"attention_bias", m.attention_bias},
      {"attention_dropout", 0.0},
      {"tie_word_embeddings", false},
      {"initializer_range", m.init_std},
  };
}

json deepseek_v3_config(const config::ModelConfig& m, bool include_mtp) {
  const model::DeepSeekRouterSettings& r = model::deepseek_router_settings(m);
  if (r.scoring_func != "sigmoid") {
    throw ConfigError(fmt::format(
        "model.router.scoring_func '{}' has no equivalent in transformers' DeepseekV3 (sigmoid only)", r.scoring_func));
  }
  const model::MlaSettings& a = model::mla_settings(m);
  json rope_scaling;
  const json rope_parameters = rope_json(m, &rope_scaling);
  json config = common_decoder_config(m);
  config.update(json{
      {"architectures", {"DeepseekV3ForCausalLM"}},
      {"model_type", "deepseek_v3"},
      {"num_key_value_heads", m.num_attention_heads},
      {"q_lora_rank", a.q_lora_rank ? json(*a.q_lora_rank) : json(nullptr)},
      {"kv_lora_rank", a.kv_lora_rank},
      {"qk_nope_head_dim", a.qk_nope_head_dim},
      {"qk_rope_head_dim", a.qk_rope_head_dim},
      {"v_head_dim", a.v_head_dim},
      {"n_routed_experts", m.n_routed_experts},
      {"n_shared_experts", model::deepseek_moe_settings(m).n_shared_experts},
      {"n_group", r.n_group},
      {"topk_group", r.topk_group},
      {"routed_scaling_factor", r.routed_scaling_factor},
      {"first_k_dense_replace", m.first_k_dense_replace},
      {"scoring_func", r.scoring_func},
      {"topk_method", "noaux_tc"},
      {"rope_scaling", rope_scaling},
      {"rope_parameters", rope_parameters},
      {"rope_interleave", m.rope_interleave},
      {"num_nextn_predict_layers", include_mtp ? m.num_nextn_predict_layers : 0},
  });
  return config;
}

json qwen3_moe_config(const config::ModelConfig& m) {
  const model::GqaSettings& a = model::gqa_settings(m);
  const auto unsupported = [](const std::string& what) {
    throw ConfigError(fmt::format("{} has no equivalent in transformers' Qwen3Moe", what));
  };
  if (!a.qk_norm) unsupported("model.attention.qk_norm=false");
  if (const int64_t shared = model::deepseek_moe_settings(m).n_shared_experts; shared != 0) {
    unsupported(fmt::format("model.ffn.n_shared_experts={}", shared));
  }
  if (m.rope_interleave) unsupported("model.rope_interleave=true (Qwen3 rotates halves)");
  if (m.rope_scaling.type != "none") unsupported(fmt::format("model.rope_scaling.type '{}'", m.rope_scaling.type));
  json dense = json::array();
  for (int64_t i = 0; i < std::min(m.first_k_dense_replace, m.num_hidden_layers); ++i) dense.push_back(i);
  json config = common_decoder_config(m);
  config.update(json{
      {"architectures", {"Qwen3MoeForCausalLM"}},
      {"model_type", "qwen3_moe"},
      {"num_key_value_heads", a.num_key_value_heads},
      {"head_dim", a.head_dim},
      {"num_experts", m.n_routed_experts},
      {"num_local_experts", m.n_routed_experts},
      {"decoder_sparse_step", 1},
      {"mlp_only_layers", dense},
      {"rope_parameters", {{"rope_type", "default"}, {"rope_theta", m.rope_theta}}},
      {"use_sliding_window", false},
  });
  return config;
}

// The transformers architecture of a layer-type combination; ConfigError for one it lacks.
enum class HfArchitecture { deepseek_v3, qwen3_moe };
HfArchitecture hf_architecture(const config::ModelConfig& m) {
  const std::string& attention = m.attention.type();
  const std::string& router = m.router.type();
  if (m.ffn.type() != "deepseek_moe") {
    throw ConfigError(fmt::format("model.ffn.type '{}' has no transformers architecture to export to (both exported "
                                  "architectures use 'deepseek_moe' experts)",
                                  m.ffn.type()));
  }
  if (attention == "mla" && router == "deepseek_v3") return HfArchitecture::deepseek_v3;
  if (attention == "gqa" && router == "softmax_topk") return HfArchitecture::qwen3_moe;
  throw ConfigError(fmt::format("model.attention.type '{}' with model.router.type '{}' has no transformers "
                                "architecture to export to (supported: mla + deepseek_v3 -> DeepseekV3, gqa + "
                                "softmax_topk -> Qwen3Moe)",
                                attention, router));
}

}  // namespace

void export_hf(const std::string& out_dir, const config::ModelConfig& m, model::DeepSeekV3Impl& model, bool include_mtp,
               bool fp8) {
  const HfArchitecture architecture = hf_architecture(m);
  if (architecture == HfArchitecture::qwen3_moe && include_mtp && m.num_nextn_predict_layers > 0) {
    throw ConfigError(fmt::format("model.num_nextn_predict_layers={}: transformers' Qwen3Moe has no MTP modules "
                                  "(export with --no-mtp)",
                                  m.num_nextn_predict_layers));
  }
  fs::create_directories(out_dir);
  json config = architecture == HfArchitecture::deepseek_v3 ? deepseek_v3_config(m, include_mtp) : qwen3_moe_config(m);
  config["torch_dtype"] = config["dtype"] = fp8 ? "bfloat16" : "float32";
  if (fp8) {
    config["quantization_config"] = {{"activation_scheme", "dynamic"}, {"fmt", "e4m3"}, {"quant_method", "fp8"},
                                     {"weight_block_size", {ops::fp8::kTile, ops::fp8::kTile}}};
  }
  std::ofstream((fs::path(out_dir) / "config.json").string()) << config.dump(2) << "\n";

  std::vector<std::pair<std::string, at::Tensor>> tensors;
  const auto state = model_state(model);
  const std::regex mtp_key(R"(mtp\.(\d+)\.(.+))");
  for (const auto& [name, t] : state) {
    if (architecture == HfArchitecture::qwen3_moe && name.size() > 24 &&
        name.compare(name.size() - 24, 24, ".e_score_correction_bias") == 0) {
      // Qwen3Moe routes without a balancing bias: exporting one that steers the choice would
      // change the routing silently.
      if (t.abs().max().item<double>() != 0.0) {
        throw ConfigError(fmt::format("{} is non-zero (max |bias| {}): transformers' Qwen3Moe has no routing bias, "
                                      "so the export would route differently (train with train.bias_update_speed=0)",
                                      name, t.abs().max().item<double>()));
      }
      continue;
    }
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
  if (fp8) tensors = fp8_release_tensors(tensors, fp8_weight_names(model, m));
  save_safetensors((fs::path(out_dir) / "model.safetensors").string(), tensors, {{"format", "pt"}});
}

}  // namespace latentmoe::io
