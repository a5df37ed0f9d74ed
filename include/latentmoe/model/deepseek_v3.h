// The DeepSeek-V3 language model: embedding, dense-then-MoE decoder blocks, final norm, untied
// head, and D Multi-Token-Prediction modules that reuse the SAME embedding and head tensors.
// Parameter names equal HF transformers' keys ("model.layers.3.mlp.experts.7.up_proj.weight",
// "lm_head.weight"); MTP modules live under "mtp.{k}.". Written for one device.
#pragma once

#include <functional>
#include <optional>

#include <vector>

#include <torch/nn/module.h>
#include <torch/nn/modules/container/modulelist.h>
#include <torch/nn/pimpl.h>

#include "latentmoe/config/config.h"
#include "latentmoe/model/embedding.h"
#include "latentmoe/model/linear.h"
#include "latentmoe/model/decoder_block.h"

namespace latentmoe::model {

// What a process builds of the model and how it initializes it.
struct ModelBuild {
  // Every parameter draws from its own stream keyed by (seed, its global name) (model/init.h).
  // Unset: torch's current CPU seed (torch::manual_seed).
  std::optional<uint64_t> seed;
  // The routed experts built in every MoE layer (expert parallelism); the rest is never allocated.
  ExpertShard experts;
};

// Embedding, main blocks and final norm: the HF "model." prefix.
class DecoderStackImpl : public torch::nn::Module {
 public:
  DecoderStackImpl(const config::ModelConfig& cfg, const ExpertShard& experts);
  TokenEmbedding embed_tokens{nullptr};  // [vocab, hidden]
  torch::nn::ModuleList layers{nullptr};       // num_hidden_layers x DecoderBlock
  RMSNorm norm{nullptr};                       // [hidden]
};
TORCH_MODULE(DecoderStack);

// MTP module k: h' = eh_proj([enorm(emb(t_{i+k})) ; hnorm(h_i^{k-1})]), one block, final norm;
// the caller applies the shared head.
class MTPModuleImpl : public torch::nn::Module {
 public:
  MTPModuleImpl(const config::ModelConfig& cfg, int64_t layer_index, const ExpertShard& experts);
  RMSNorm enorm{nullptr};             // [hidden]
  RMSNorm hnorm{nullptr};             // [hidden]
  Linear eh_proj{nullptr};  // [hidden, 2*hidden]
  DecoderBlock block{nullptr};
  RMSNorm norm{nullptr};  // [hidden], HF/release name: shared_head.norm
};
TORCH_MODULE(MTPModule);

struct ModelOutput {
  torch::Tensor logits;                   // [batch, seq, vocab]
  torch::Tensor hidden;                   // [batch, seq, hidden], last block output before the final norm
  std::vector<torch::Tensor> mtp_logits;  // D x [batch, seq - k, vocab]: depth k at i predicts t_{i+k+1}
  // Set instead of the logits when the forward skips the LM head (training: the loss runs the head
  // chunk by chunk, latentmoe::linear_cross_entropy): the final-norm outputs and the head weight.
  torch::Tensor head_input;                    // [batch, seq, hidden]
  std::vector<torch::Tensor> mtp_head_inputs;  // D x [batch, seq - k, hidden]
  torch::Tensor head_weight;                   // lm_head.weight [vocab, hidden]
  std::vector<RouterOutput> routing;      // one per MoE block: main blocks first, then MTP blocks
};

class DeepSeekV3Impl : public torch::nn::Module {
 public:
  // Built on the device parameter_options() names (model/init.h: the CPU, or meta dims only).
  explicit DeepSeekV3Impl(const config::ModelConfig& cfg, const ModelBuild& build = {});

  // input_ids [batch, seq]. with_mtp: also run the MTP modules (training). caches: one per main
  // block for cached generation (positions continue from caches[0].length); MTP is skipped then.
  // compute_logits false: head_input/mtp_head_inputs/head_weight instead of the logits.
  ModelOutput forward(const torch::Tensor& input_ids, bool with_mtp = true,
                      std::vector<std::unique_ptr<AttentionCache>>* caches = nullptr, bool compute_logits = true);
  // One empty generation cache per main block (each made by its attention layer).
  std::vector<std::unique_ptr<AttentionCache>> make_caches(int64_t batch, int64_t capacity,
                                                          const torch::TensorOptions& options);

  // Every module initializes its own parameters (model/init.h), each from its stream keyed by
  // (seed, its global name): Normal(0, init_std) for weight matrices and the embedding, norms 1,
  // biases 0.
  void reset_parameters(double init_std, uint64_t seed);
  // Activation recomputation of every block, main and MTP (train.recompute; model/recompute.h).
  void set_recompute(Recompute mode);
  // precision.fp8: every projection inside the decoder blocks (attention, dense MLPs, shared and
  // routed experts; main and MTP) runs in FP8; the embedding, the output head, MTP's eh_proj, the
  // router gates and the norms stay in the compute dtype, as in DeepSeek-V3. Each FP8 projection's
  // statistics are named by its module path ("model.layers.0.self_attn.q_a_proj").
  void set_fp8(const ops::fp8::Recipe& recipe);
  // Every module inside a decoder block (main and MTP), with its path: the modules precision.fp8
  // covers (and the weights `convert --to-hf --fp8` writes in e4m3).
  void for_each_block_module(const std::function<void(const std::string&, torch::nn::Module&)>& fn);

  config::ModelConfig cfg;
  DecoderStack model{nullptr};
  Linear lm_head{nullptr};  // [vocab, hidden]
  torch::nn::ModuleList mtp{nullptr};  // num_nextn_predict_layers x MTPModule
};
TORCH_MODULE(DeepSeekV3);

}  // namespace latentmoe::model
