// The model is built on the meta device with this rank's experts only (as the trainer builds it
// on the CPU), and the gradient buckets are planned by the same function DataParallel uses.
#include "latentmoe/parallel/shard_plan.h"

#include <fmt/format.h>

#include "latentmoe/model/deepseek_v3.h"
#include "latentmoe/model/init.h"
#include "latentmoe/model/param_count.h"
#include "latentmoe/parallel/layout.h"
#include "latentmoe/util/error.h"

namespace latentmoe::parallel {

namespace {
std::string gib(int64_t bytes) { return fmt::format("{:.2f} GiB", static_cast<double>(bytes) / (1 << 30)); }
}  // namespace

RankShard plan_rank_shard(const config::Config& cfg, int world_size, int rank) {
  if (world_size < 1) throw ConfigError(fmt::format("--world-size must be >= 1, got {}", world_size));
  if (rank < 0 || rank >= world_size) {
    throw ConfigError(fmt::format("--rank {} is outside the world of {} ranks (allowed: 0..{})", rank, world_size,
                                  world_size - 1));
  }
  const ParallelLayout layout(world_size, rank, static_cast<int>(cfg.parallel.ep), cfg.model.n_routed_experts);
  RankShard s{.world_size = world_size, .rank = rank, .ep = layout.ep, .edp = layout.edp_size(),
              .zero1 = world_size > 1 && cfg.parallel.zero_stage == 1};
  s.first_expert = layout.first_local_expert();
  s.experts_held = layout.local_experts();

  const model::ParameterCounts counts = model::count_parameters(cfg.model);
  s.model_parameters = counts.total + counts.mtp_total;
  const model::BuildOnMeta on_meta;
  model::ModelBuild build;
  if (world_size > 1) build.experts = {.first = s.first_expert, .count = s.experts_held};
  model::DeepSeekV3 held(cfg.model, build);

  const std::set<std::string> experts = model::routed_expert_parameter_names(*held);
  std::vector<int64_t> dense, expert;  // in the trainer's order: the model's parameter order
  for (const auto& p : held->named_parameters()) {
    s.parameters += p.value().numel();
    const bool is_expert = layout.ep > 1 && experts.count(p.key()) > 0;
    if (experts.count(p.key())) s.expert_parameters += p.value().numel();
    (is_expert ? expert : dense).push_back(p.value().numel());
  }
  if (world_size == 1) {
    s.moment_elements = 2 * s.parameters;
  } else {
    const int64_t bucket_bytes = static_cast<int64_t>(cfg.parallel.bucket_size_mb * (1 << 20));
    const auto add_group = [&](const std::vector<int64_t>& numels, int ranks, int group_rank) {
      if (numels.empty()) return;
      const BucketPlan plan = plan_buckets(numels, bucket_bytes, ranks);
      for (const BucketPlan::Bucket& b : plan.buckets) {
        s.bucket_elements += b.padded + (s.zero1 ? b.padded / ranks : 0);
        for (const BucketPlan::Slot& slot : b.slots) {
          if (!s.zero1) {
            s.moment_elements += 2 * slot.numel;
            continue;
          }
          const auto [lo, hi] = zero1_owned_span(slot.offset, slot.numel, b.padded / ranks, group_rank);
          s.moment_elements += 2 * std::max<int64_t>(0, hi - lo);
        }
      }
    };
    add_group(dense, world_size, rank);
    add_group(expert, layout.edp_size(), layout.ep_group());
  }
  s.parameter_bytes = s.gradient_bytes = 4 * s.parameters;  // fp32 master weights and gradients
  s.moment_bytes = (cfg.optimizer.moments_dtype == "bf16" ? 2 : 4) * s.moment_elements;
  s.bucket_bytes = 4 * s.bucket_elements;
  return s;
}

std::string format_rank_shard(const RankShard& s) {
  std::string out = fmt::format("rank {} of {}: parallel.ep {} (expert-data-parallel groups of {}), ZeRO-1 {}\n", s.rank,
                                s.world_size, s.ep, s.edp, s.zero1 ? "on" : "off");
  out += fmt::format("routed experts held  [{}, {}) of each MoE layer\n", s.first_expert, s.first_expert + s.experts_held);
  out += fmt::format("parameters           {} of {} ({} of them routed experts): {} fp32\n", s.parameters,
                     s.model_parameters, s.expert_parameters, gib(s.parameter_bytes));
  out += fmt::format("gradients            {} elements: {} fp32\n", s.parameters, gib(s.gradient_bytes));
  out += fmt::format("AdamW moments        {} elements: {}\n", s.moment_elements, gib(s.moment_bytes));
  out += fmt::format("gradient buckets     {} elements: {} fp32\n", s.bucket_elements, gib(s.bucket_bytes));
  out += fmt::format("total                {} (activations and workspace not included)\n", gib(s.total_bytes()));
  return out;
}

}  // namespace latentmoe::parallel
