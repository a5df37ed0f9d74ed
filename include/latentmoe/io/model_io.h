// Moving model weights between the module and files: strict state loading (nothing is copied
// unless every tensor is present with the right shape), latentmoe model directories
// (config.yaml + model.safetensors), and HF transformers DeepseekV3 directories (config.json +
// safetensors, sharded or not, FP8 blockwise weights dequantized on import).
#pragma once

#include <ATen/core/Tensor.h>

#include <map>
#include <string>

#include "latentmoe/config/config.h"
#include "latentmoe/io/hf_config.h"
#include "latentmoe/io/hf_config.h"
#include "latentmoe/model/deepseek_v3.h"

namespace latentmoe::io {

// Parameters and persistent buffers (the expert correction biases) by name.
std::map<std::string, at::Tensor> model_state(model::DeepSeekV3Impl& model);

// Copies `tensors` into the model after checking that the names match exactly (no missing, no
// unexpected) and every shape agrees; otherwise throws SafetensorsError listing the offenders
// and leaves the model untouched. `source` names the file/dir in messages.
void load_model_state(model::DeepSeekV3Impl& model, const std::map<std::string, at::Tensor>& tensors,
                      const std::string& source);

// latentmoe model directory: config.yaml (the full config) + model.safetensors.
void save_model_dir(const std::string& dir, const config::Config& cfg, model::DeepSeekV3Impl& model);
config::Config load_model_dir_config(const std::string& dir);
model::DeepSeekV3 load_model_dir(const std::string& dir, config::Config* cfg_out = nullptr);

// HF transformers DeepseekV3 (config.json read by hf_config.h; the MTP block sits at layer index
// num_hidden_layers). Imports weights; if the checkpoint has no MTP weights, num_nextn_predict_layers in
// *cfg is set to 0 (and a warning logged).
model::DeepSeekV3 import_hf(const std::string& hf_dir, config::ModelConfig* cfg);
// Writes config.json (both rope forms) and model.safetensors; include_mtp writes the MTP modules
// as layer num_hidden_layers + k, with embed_tokens/shared_head.head copies as in the release.
// fp8: as the DeepSeek-V3 release is published: the projections inside the decoder blocks (the ones
// precision.fp8 trains in FP8) in e4m3 with fp32 `weight_scale_inv` per 128x128 block, every other
// tensor in bf16, and config.json's quantization_config (fp8, e4m3, dynamic activations, 128x128).
void export_hf(const std::string& out_dir, const config::ModelConfig& cfg, model::DeepSeekV3Impl& model,
               bool include_mtp, bool fp8 = false);

}  // namespace latentmoe::io
