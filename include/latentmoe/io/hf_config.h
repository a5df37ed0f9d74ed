// HF transformers DeepseekV3 config.json -> latentmoe ModelConfig (both the v4 `rope_scaling`
// and v5 `rope_parameters` forms). Torch-free, so the fuzz target builds without libtorch.
// Errors are ConfigError naming the file, the key and the bad value.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

#include "latentmoe/config/config.h"

namespace latentmoe::io {

struct HfConfig {
  config::ModelConfig model;
  // quantization_config.weight_block_size of an FP8 release (128 x 128 when absent).
  int64_t fp8_block_rows = 128;
  int64_t fp8_block_cols = 128;
};

HfConfig parse_hf_config(std::string_view json_text, const std::string& file);
HfConfig read_hf_config(const std::string& hf_dir);  // <hf_dir>/config.json
config::ModelConfig model_config_from_hf(const std::string& hf_dir);

}  // namespace latentmoe::io
