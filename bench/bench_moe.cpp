// MoE layer forward+backward: latentmoe's sort-by-expert permute vs an HF-style loop that finds
// each expert's tokens with a mask (torch.where) over all tokens. Same weights, same routing,
// fp32, CPU, threads as configured (OMP_NUM_THREADS). Shapes: the debug and small presets.
#include <ATen/Parallel.h>
#include <benchmark/benchmark.h>

#include "latentmoe/model/layer_registry.h"
#include "latentmoe/model/moe.h"

namespace {
latentmoe::config::ModelConfig shape(int64_t hidden, int64_t inter, int64_t experts, int64_t top_k) {
  latentmoe::config::ModelConfig m;
  m.hidden_size = hidden;
  latentmoe::model::deepseek_moe_settings(m).moe_intermediate_size = inter;
  m.n_routed_experts = experts;
  m.num_experts_per_tok = top_k;
  latentmoe::model::deepseek_router_settings(m).n_group = 4;
  latentmoe::model::deepseek_router_settings(m).topk_group = 2;
  return m;
}

// HF transformers' expert loop: one mask over all (token, slot) pairs per expert.
torch::Tensor masked_loop(latentmoe::model::DeepSeekMoE& moe, const torch::Tensor& x, const latentmoe::model::RouterOutput& r) {
  torch::Tensor out = torch::zeros_like(x);
  for (int64_t e = 0; e < moe->options.experts(); ++e) {
    const auto hit = torch::where(r.expert_ids == e);
    if (hit[0].numel() == 0) continue;
    const torch::Tensor y = moe->expert(e).forward(x.index_select(0, hit[0]));
    out = out.index_add(0, hit[0], y * r.gate_weights.index({hit[0], hit[1]}).unsqueeze(1));
  }
  return out;
}

template <bool kPermuted>
void run(benchmark::State& state) {
  const auto cfg = state.range(0) == 0 ? shape(128, 64, 8, 2) : shape(512, 384, 16, 2);
  const int64_t tokens = state.range(1);
  torch::manual_seed(0);
  namespace model = latentmoe::model;
  model::DeepSeekMoE moe(model::DeepSeekMoEOptions::from_config(cfg), model::Router(model::make_router(cfg)));
  for (auto& p : moe->parameters()) {
    torch::NoGradGuard g;
    p.normal_(0, 0.02);
  }
  const torch::Tensor x = torch::randn({tokens, cfg.hidden_size}, torch::requires_grad());
  for (auto _ : state) {
    const auto routing = moe->gate(x);
    const torch::Tensor y = kPermuted ? moe->routed_experts(x, routing) : masked_loop(moe, x, routing);
    y.sum().backward();
    moe->zero_grad();
  }
  state.SetItemsProcessed(state.iterations() * tokens);
  state.SetLabel(std::string(state.range(0) == 0 ? "debug" : "small") + " shape, " +
                 std::to_string(at::get_num_threads()) + " threads");
}
}  // namespace

static void BM_moe_permuted(benchmark::State& s) { run<true>(s); }
static void BM_moe_masked_loop(benchmark::State& s) { run<false>(s); }
BENCHMARK(BM_moe_permuted)->Args({0, 1024})->Args({1, 4096})->Unit(benchmark::kMillisecond);
BENCHMARK(BM_moe_masked_loop)->Args({0, 1024})->Args({1, 4096})->Unit(benchmark::kMillisecond);

BENCHMARK_MAIN();
