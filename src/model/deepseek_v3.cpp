// Model assembly and forward. MTP depth k consumes the previous depth's hidden states (depth 0 =
// the main model's last block output, before the final norm) at positions [0, seq - k).
#include "latentmoe/model/deepseek_v3.h"

#include "latentmoe/model/init.h"

#include <ATen/CPUGeneratorImpl.h>

namespace latentmoe::model {

DecoderStackImpl::DecoderStackImpl(const config::ModelConfig& cfg, const ExpertShard& experts) {
  embed_tokens = register_module("embed_tokens", TokenEmbedding(cfg.vocab_size, cfg.hidden_size));
  layers = register_module("layers", torch::nn::ModuleList());
  for (int64_t i = 0; i < cfg.num_hidden_layers; ++i) layers->push_back(DecoderBlock(cfg, i, experts));
  norm = register_module("norm", RMSNorm(RMSNormOptions(cfg.hidden_size).eps(cfg.rms_norm_eps)));
}

MTPModuleImpl::MTPModuleImpl(const config::ModelConfig& cfg, int64_t layer_index, const ExpertShard& experts) {
  const auto norm_options = RMSNormOptions(cfg.hidden_size).eps(cfg.rms_norm_eps);
  enorm = register_module("enorm", RMSNorm(norm_options));
  hnorm = register_module("hnorm", RMSNorm(norm_options));
  eh_proj = register_module("eh_proj",
                            Linear(torch::nn::LinearOptions(2 * cfg.hidden_size, cfg.hidden_size).bias(false)));
  block = register_module("block", DecoderBlock(cfg, layer_index, experts));
  norm = register_module("norm", RMSNorm(norm_options));
}

DeepSeekV3Impl::DeepSeekV3Impl(const config::ModelConfig& cfg_, const ModelBuild& build) : cfg(cfg_) {
  model = register_module("model", DecoderStack(cfg, build.experts));
  lm_head = register_module("lm_head",
                            Linear(torch::nn::LinearOptions(cfg.hidden_size, cfg.vocab_size).bias(false)));
  mtp = register_module("mtp", torch::nn::ModuleList());
  for (int64_t k = 0; k < cfg.num_nextn_predict_layers; ++k) {
    mtp->push_back(MTPModule(cfg, cfg.num_hidden_layers + k, build.experts));
  }
  reset_parameters(cfg.init_std, build.seed.value_or(at::detail::getDefaultCPUGenerator().current_seed()));
}

void DeepSeekV3Impl::reset_parameters(double init_std, uint64_t seed) { reset_module_tree(*this, init_std, seed); }

std::vector<std::unique_ptr<AttentionCache>> DeepSeekV3Impl::make_caches(int64_t batch, int64_t capacity,
                                                                        const torch::TensorOptions& options) {
  std::vector<std::unique_ptr<AttentionCache>> caches;
  for (int64_t i = 0; i < cfg.num_hidden_layers; ++i) {
    caches.push_back(model->layers[i]->as<DecoderBlockImpl>()->self_attn->make_cache(batch, capacity, options));
  }
  return caches;
}

void DeepSeekV3Impl::set_recompute(Recompute mode) {
  for (const auto& module : modules(/*include_self=*/false)) {
    if (auto block = std::dynamic_pointer_cast<DecoderBlockImpl>(module)) block->set_recompute(mode);
  }
}

void DeepSeekV3Impl::for_each_block_module(const std::function<void(const std::string&, torch::nn::Module&)>& fn) {
  for (const auto& item : named_modules("", /*include_self=*/false)) {
    if (!std::dynamic_pointer_cast<DecoderBlockImpl>(item.value())) continue;
    for (const auto& sub : item.value()->named_modules(item.key())) fn(sub.key(), *sub.value());
  }
}

void DeepSeekV3Impl::set_fp8(const ops::fp8::Recipe& recipe) {
  for_each_block_module([&recipe](const std::string& name, torch::nn::Module& module) {
    if (auto* linear = dynamic_cast<LinearImpl*>(&module)) {
      linear->fp8 = recipe;
      linear->fp8_name = name;
    } else if (auto* moe = dynamic_cast<DeepSeekMoEImpl*>(&module)) {
      moe->fp8 = recipe;
      moe->fp8_name = name;
    }
  });
}

ModelOutput DeepSeekV3Impl::forward(const torch::Tensor& input_ids, bool with_mtp,
                                    std::vector<std::unique_ptr<AttentionCache>>* caches,
                                    bool compute_logits) {
  TORCH_CHECK(input_ids.dim() == 2, "DeepSeekV3: input_ids must be [batch, seq], got ", input_ids.sizes());
  TORCH_CHECK(!caches || static_cast<int64_t>(caches->size()) == cfg.num_hidden_layers,
              "DeepSeekV3: need one cache per layer (", cfg.num_hidden_layers, "), got ", caches ? caches->size() : 0);
  const int64_t seq = input_ids.size(1);
  const int64_t start = caches ? (*caches)[0]->length : 0;
  const auto long_options = torch::TensorOptions(torch::kLong).device(input_ids.device());
  const torch::Tensor positions = torch::arange(start, start + seq, long_options);

  ModelOutput out;
  const torch::Tensor embedded = model->embed_tokens(input_ids);
  torch::Tensor h = embedded;
  for (int64_t i = 0; i < cfg.num_hidden_layers; ++i) {
    BlockOutput b = model->layers[i]->as<DecoderBlockImpl>()->forward(h, positions, caches ? (*caches)[i].get() : nullptr);
    h = b.hidden;
    if (b.routing) out.routing.push_back(std::move(*b.routing));
  }
  out.hidden = h;
  if (compute_logits) {
    out.logits = lm_head(model->norm(h));
  } else {
    out.head_input = model->norm(h);
    out.head_weight = lm_head->weight;
  }
  if (!with_mtp || caches) return out;

  torch::Tensor previous = h;
  for (int64_t k = 1; k <= cfg.num_nextn_predict_layers && k < seq; ++k) {
    auto* module = mtp[k - 1]->as<MTPModuleImpl>();
    const int64_t len = seq - k;
    const torch::Tensor next_embedding = embedded.narrow(1, k, len);  // emb(t_{i+k})
    const torch::Tensor combined = module->eh_proj(
        torch::cat({module->enorm(next_embedding), module->hnorm(previous.narrow(1, 0, len))}, -1));
    BlockOutput b = module->block->forward(combined, positions.narrow(0, 0, len));
    if (b.routing) out.routing.push_back(std::move(*b.routing));
    if (compute_logits) {
      out.mtp_logits.push_back(lm_head(module->norm(b.hidden)));
    } else {
      out.mtp_head_inputs.push_back(module->norm(b.hidden));
    }
    previous = b.hidden;
  }
  return out;
}

}  // namespace latentmoe::model
