// The run configuration: one struct per section. Defaults here are the `debug` preset (the
// default run); each field's doc and allowed values are declared in src/config/sections.cpp.
// Keys in YAML/JSON are exactly these field names. No torch headers here.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "latentmoe/config/layer_choice.h"
#include "latentmoe/config/schema.h"

namespace latentmoe::config {

struct RopeScalingConfig {
  std::string type = "none";  // none | yarn
  double factor = 1.0;
  int64_t original_max_position_embeddings = 4096;
  double beta_fast = 32.0;
  double beta_slow = 1.0;
  double mscale = 1.0;
  double mscale_all_dim = 1.0;
  void describe(FieldVisitor& v);
};

struct ModelConfig {
  int64_t vocab_size = 8192;
  int64_t hidden_size = 128;
  int64_t intermediate_size = 384;
  int64_t num_hidden_layers = 3;
  int64_t num_attention_heads = 4;
  // The attention type and its keys (model/attention_settings.h for the built-in ones).
  LayerChoice attention{"attention", "mla"};
  int64_t n_routed_experts = 8;
  int64_t num_experts_per_tok = 2;
  bool norm_topk_prob = true;
  // The router type and its keys (model/router_settings.h for the built-in ones).
  LayerChoice router{"router", "deepseek_v3"};
  // The MoE layers' FFN type and its keys (model/moe_settings.h for the built-in one).
  LayerChoice ffn{"ffn", "deepseek_moe"};
  int64_t first_k_dense_replace = 1;
  double rms_norm_eps = 1e-6;
  int64_t max_position_embeddings = 4096;
  double rope_theta = 10000.0;
  bool rope_interleave = true;
  RopeScalingConfig rope_scaling;
  bool attention_bias = false;
  int64_t num_nextn_predict_layers = 1;
  double init_std = 0.006;
  void describe(FieldVisitor& v);
};

// Megatron's --rampup-batch-size, in tokens: the global batch starts at `start` sequences and
// grows by `increment` (the last increment may be partial) linearly in consumed tokens, reaching
// train.global_batch_size after `tokens`. start = 0: no ramp.
struct BatchRampConfig {
  int64_t start = 0;
  int64_t increment = 0;
  int64_t tokens = 0;
  void describe(FieldVisitor& v);
};

struct TrainConfig {
  int64_t steps = 300;  // exactly one of steps and tokens is > 0
  int64_t tokens = 0;
  int64_t global_batch_size = 16;
  int64_t micro_batch_size = 8;
  int64_t grad_accum_steps = 0;
  BatchRampConfig batch_ramp;
  int64_t seq_len = 128;
  double grad_clip_norm = 1.0;
  std::string device = "auto";  // auto | cpu | cuda
  std::string recompute = "none";  // none | selective | full
  double mtp_loss_weight = 0.3;
  double mtp_loss_weight_final = 0.3;
  int64_t mtp_loss_weight_switch_tokens = 0;
  double seq_aux_loss_alpha = 1e-4;
  double router_z_loss_weight = 0.0;
  double bias_update_speed = 1e-2;
  int64_t bias_update_freeze_tokens = 0;
  int64_t eval_interval = 100;
  int64_t eval_batches = 8;
  double spike_zscore = 0.0;
  int64_t spike_window = 50;
  std::string spike_action = "skip";  // skip | rerun | stop
  int64_t replica_check_interval = 0;
  int64_t collapse_warn_steps = 20;
  std::string init_optimizer = "carry";  // carry | reset: AdamW state under `train --init-from`
  void describe(FieldVisitor& v);
};

struct OptimizerConfig {
  std::string type = "adamw";
  double lr = 3e-3;
  double beta1 = 0.9;
  double beta2 = 0.95;
  double eps = 1e-8;
  double weight_decay = 0.1;
  bool decay_1d_params = false;
  std::string moments_dtype = "fp32";  // fp32 | bf16
  void describe(FieldVisitor& v);
};

struct ScheduleConfig {
  std::string type = "cosine";  // constant | cosine | multiphase
  std::string unit = "steps";   // steps | tokens: unit of decay_start, decay_length, stepdown_at
  int64_t warmup = 20;          // always in steps
  int64_t decay_start = 0;
  int64_t decay_length = 0;
  double min_lr = 3e-4;
  std::vector<int64_t> stepdown_at = {};
  std::vector<double> stepdown_lr = {};
  void describe(FieldVisitor& v);
};

struct DataConfig {
  std::string tokenizer = "";
  std::vector<std::string> paths = {};
  std::vector<double> weights = {};
  double valid_fraction = 0.02;
  double fim_rate = 0.0;
  double fim_spm_rate = 0.5;
  int64_t num_workers = 1;
  void describe(FieldVisitor& v);
};

struct ParallelConfig {
  int64_t ep = 1;
  int64_t zero_stage = 0;
  std::string backend = "auto";  // auto | gloo | nccl
  double bucket_size_mb = 25.0;
  int64_t timeout_s = 300;
  void describe(FieldVisitor& v);
};

struct PrecisionConfig {
  std::string compute_dtype = "fp32";  // fp32 | bf16
  std::string master_dtype = "fp32";
  std::string cpu_low_precision_gemm = "auto";  // auto | native | emulated
  std::string fp8 = "none";                     // none | blockwise | tensorwise
  bool fp8_pow2_scales = false;
  void describe(FieldVisitor& v);
};

struct CheckpointConfig {
  std::string dir = "runs/debug/checkpoints";
  int64_t interval = 100;
  int64_t keep_last = 3;
  void describe(FieldVisitor& v);
};

struct LoggingConfig {
  std::string level = "info";  // trace | debug | info | warn | error
  int64_t interval = 10;
  std::string file = "";
  std::string dir = "runs/debug";
  bool jsonl = true;
  bool tensorboard = true;
  double peak_tflops = 0.0;
  void describe(FieldVisitor& v);
};

struct Config {
  std::string name = "debug";
  int64_t seed = 1234;
  ModelConfig model;
  TrainConfig train;
  OptimizerConfig optimizer;
  ScheduleConfig schedule;
  DataConfig data;
  ParallelConfig parallel;
  PrecisionConfig precision;
  CheckpointConfig checkpoint;
  LoggingConfig logging;
  void describe(FieldVisitor& v);
};

// Describes the root of the schema for a config object (for the generic walkers in schema.h).
inline auto describe_root(Config& cfg) {
  return [&cfg](FieldVisitor& v) { cfg.describe(v); };
}

bool operator==(const Config& a, const Config& b);

}  // namespace latentmoe::config
