// Linear partition by dynamic programming: best[s][i] = the smallest largest-stage cost of the
// first i blocks in s stages; the last stage also carries the head and the MTP modules.
#include "latentmoe/parallel/pipeline_plan.h"

#include <fmt/format.h>

#include <algorithm>
#include <limits>

#include "latentmoe/model/param_count.h"
#include "latentmoe/util/error.h"

namespace latentmoe::parallel {

std::vector<PipelineStage> plan_pipeline_stages(const config::ModelConfig& model, int64_t seq_len, int64_t stages) {
  const int64_t layers = model.num_hidden_layers;
  if (stages < 1 || stages > layers) {
    throw ConfigError(fmt::format("{} pipeline stages cannot split model.num_hidden_layers ({}) blocks: every stage "
                                  "needs at least one block (allowed: 1..{})",
                                  stages, layers, layers));
  }
  std::vector<double> prefix(static_cast<size_t>(layers) + 1, 0.0);
  for (int64_t i = 0; i < layers; ++i) {
    prefix[static_cast<size_t>(i) + 1] = prefix[static_cast<size_t>(i)] + model::block_forward_flops_per_token(model, i, seq_len);
  }
  const model::FlopCounts whole = model::forward_flops_per_token(model, seq_len);
  const double tail = whole.forward - prefix.back() + whole.mtp_forward;  // head + MTP modules
  const auto cost = [&](int64_t from, int64_t to, bool last) {
    return prefix[static_cast<size_t>(to)] - prefix[static_cast<size_t>(from)] + (last ? tail : 0.0);
  };
  constexpr double kInf = std::numeric_limits<double>::infinity();
  const auto n = static_cast<size_t>(layers) + 1;
  std::vector<std::vector<double>> best(static_cast<size_t>(stages) + 1, std::vector<double>(n, kInf));
  std::vector<std::vector<int64_t>> cut(static_cast<size_t>(stages) + 1, std::vector<int64_t>(n, 0));
  best[0][0] = 0.0;
  for (int64_t s = 1; s <= stages; ++s) {
    const bool last = s == stages;
    for (int64_t i = s; i <= layers - (stages - s); ++i) {
      for (int64_t j = s - 1; j < i; ++j) {
        const double candidate = std::max(best[static_cast<size_t>(s) - 1][static_cast<size_t>(j)], cost(j, i, last));
        if (candidate < best[static_cast<size_t>(s)][static_cast<size_t>(i)]) {
          best[static_cast<size_t>(s)][static_cast<size_t>(i)] = candidate;
          cut[static_cast<size_t>(s)][static_cast<size_t>(i)] = j;
        }
      }
    }
  }
  std::vector<PipelineStage> out(static_cast<size_t>(stages));
  for (int64_t s = stages, end = layers; s >= 1; --s) {
    const int64_t begin = cut[static_cast<size_t>(s)][static_cast<size_t>(end)];
    PipelineStage& stage = out[static_cast<size_t>(s) - 1];
    stage = {.first_layer = begin, .layer_count = end - begin, .embedding = s == 1, .head = s == stages,
             .forward_flops_per_token = cost(begin, end, s == stages)};
    end = begin;
  }
  return out;
}

}  // namespace latentmoe::parallel
