// Closed-form counts mirroring the modules in src/model/ (a test checks them against the built
// model's tensors, so the two cannot drift).
#include "latentmoe/model/param_count.h"

#include <fmt/format.h>

#include "latentmoe/model/checked_count.h"
#include "latentmoe/util/error.h"

namespace latentmoe::model {

namespace {

struct BlockCounts {
  Count attention, dense_ffn, routed, routed_activated, shared, router, norms;
  Count total() const { return attention + dense_ffn + routed + shared + router + norms; }
  Count activated() const { return attention + dense_ffn + routed_activated + shared + router + norms; }
};

// The registered layer type's own counter (config/layer_choice.h).
config::LayerCounts layer_counts(const config::LayerChoice& choice, const config::ModelConfig& m) {
  const config::LayerTypeInfo* info = config::find_layer_type(choice.family(), choice.type());
  if (!info) throw ConfigError(fmt::format("model.{}.type '{}' is not registered", choice.family(), choice.type()));
  return info->count ? info->count(m) : config::LayerCounts{};
}

BlockCounts block_counts(const config::ModelConfig& m, int64_t layer_index) {
  BlockCounts b;
  b.attention = layer_counts(m.attention, m).parameters;
  b.norms = Count(2) * m.hidden_size;
  if (m.n_routed_experts > 0 && layer_index >= m.first_k_dense_replace) {
    const config::LayerCounts ffn = layer_counts(m.ffn, m);
    const int64_t activated = ffn.activated_parameters.value_or(ffn.parameters);
    // What a token does not run through is routed; what every token runs is shared.
    b.routed = ffn.routed_parameters;
    b.shared = ffn.parameters - ffn.routed_parameters;
    b.routed_activated = activated - b.shared.value();
    b.router = layer_counts(m.router, m).parameters;
  } else {
    b.dense_ffn = Count(3) * m.hidden_size * m.intermediate_size;
  }
  return b;
}

std::string billions(int64_t n) {
  if (n >= 1'000'000'000) return fmt::format("{:.2f}B", static_cast<double>(n) / 1e9);
  return fmt::format("{:.2f}M", static_cast<double>(n) / 1e6);
}
}  // namespace

ParameterCounts count_parameters(const config::ModelConfig& m) {
  const Count hidden = m.hidden_size, embedding = Count(m.vocab_size) * hidden;
  Count attention, dense_ffn, routed, shared, routers, norms, activated_blocks, mtp_total, mtp_activated;
  for (int64_t i = 0; i < m.num_hidden_layers; ++i) {
    const BlockCounts b = block_counts(m, i);
    attention += b.attention;
    dense_ffn += b.dense_ffn;
    routed += b.routed;
    shared += b.shared;
    routers += b.router;
    norms += b.norms;
    activated_blocks += b.activated();
  }
  norms += hidden;  // final norm
  for (int64_t k = 0; k < m.num_nextn_predict_layers; ++k) {
    const BlockCounts b = block_counts(m, m.num_hidden_layers + k);
    const Count extra = Count(3) * hidden + Count(2) * hidden * hidden;  // enorm, hnorm, norm, eh_proj
    mtp_total += b.total() + extra;
    mtp_activated += b.activated() + extra;
  }
  ParameterCounts c;
  c.embedding = c.head = embedding.value();
  c.attention = attention.value();
  c.dense_ffn = dense_ffn.value();
  c.routed_experts = routed.value();
  c.shared_experts = shared.value();
  c.routers = routers.value();
  c.norms = norms.value();
  c.total = (embedding + embedding + attention + dense_ffn + routed + shared + routers + norms).value();
  c.activated = (embedding + embedding + activated_blocks + hidden).value();
  c.mtp_total = mtp_total.value();
  c.mtp_activated = mtp_activated.value();
  return c;
}

FlopCounts forward_flops_per_token(const config::ModelConfig& m, int64_t seq_len) {
  FlopCounts f;
  const ParameterCounts c = count_parameters(m);
  // Norm weights and router biases are not matmul weights; the embedding is a lookup.
  const config::LayerCounts attention = layer_counts(m.attention, m);
  const int64_t norm_like = c.norms + m.num_hidden_layers * attention.norm_parameters;
  const double matmul_weights = static_cast<double>(c.activated - c.embedding - norm_like);
  f.matmul = 2.0 * matmul_weights;
  const double context = (static_cast<double>(seq_len) + 1.0) / 2.0;
  const double per_layer_attention = 2.0 * context * static_cast<double>(attention.score_width);
  f.attention = per_layer_attention * static_cast<double>(m.num_hidden_layers);
  f.forward = f.matmul + f.attention;
  if (m.num_nextn_predict_layers > 0) {
    const int64_t mtp_norm_like = m.num_nextn_predict_layers * (5 * m.hidden_size + attention.norm_parameters);
    f.mtp_forward = 2.0 * (static_cast<double>(c.mtp_activated - mtp_norm_like) +
                           static_cast<double>(m.num_nextn_predict_layers) * static_cast<double>(c.head)) +
                    per_layer_attention * static_cast<double>(m.num_nextn_predict_layers);
  }
  return f;
}

double block_forward_flops_per_token(const config::ModelConfig& m, int64_t layer_index, int64_t seq_len) {
  const BlockCounts b = block_counts(m, layer_index);
  const config::LayerCounts attention = layer_counts(m.attention, m);
  const double matmul_weights = static_cast<double>(b.activated().value() - b.norms.value() - attention.norm_parameters);
  const double context = (static_cast<double>(seq_len) + 1.0) / 2.0;
  return 2.0 * matmul_weights + 2.0 * context * static_cast<double>(attention.score_width);
}

std::string model_summary(const config::Config& cfg) {
  const config::ModelConfig& m = cfg.model;
  const ParameterCounts c = count_parameters(m);
  const FlopCounts f = forward_flops_per_token(m, cfg.train.seq_len);
  const int64_t moe_layers = m.n_routed_experts > 0 ? m.num_hidden_layers - m.first_k_dense_replace : 0;
  std::string out;
  out += fmt::format("model '{}': {} layers ({} dense, {} MoE), hidden {}, {} heads, vocab {}\n", cfg.name,
                     m.num_hidden_layers, m.num_hidden_layers - moe_layers, moe_layers, m.hidden_size,
                     m.num_attention_heads, m.vocab_size);
  out += fmt::format("parameters   total {} ({}), activated per token {} ({})\n", billions(c.total), c.total,
                     billions(c.activated), c.activated);
  out += fmt::format("  embedding {} | head {} | attention {} | dense FFN {} | routed experts {} | shared experts {} | "
                     "routers {} | norms {}\n",
                     billions(c.embedding), billions(c.head), billions(c.attention), billions(c.dense_ffn),
                     billions(c.routed_experts), billions(c.shared_experts), billions(c.routers), billions(c.norms));
  out += fmt::format("MTP (D={})    {} extra parameters ({}), {} activated (embedding and head shared)\n",
                     m.num_nextn_predict_layers, billions(c.mtp_total), c.mtp_total, billions(c.mtp_activated));
  out += fmt::format("forward FLOPs per token at seq_len {} (causal): {:.4g} GFLOP (matmul {:.4g}, attention {:.4g}); "
                     "MTP {:.4g} GFLOP\n",
                     cfg.train.seq_len, f.forward / 1e9, f.matmul / 1e9, f.attention / 1e9, f.mtp_forward / 1e9);
  out += fmt::format("training FLOPs per token (3x forward, MTP included): {:.4g} GFLOP\n",
                     3.0 * (f.forward + f.mtp_forward) / 1e9);
  return out;
}

}  // namespace latentmoe::model
