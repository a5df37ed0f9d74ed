// Pipeline stages over consecutive decoder blocks, balanced by the FLOP counter (torch-free): the
// embedding on the first stage; the final norm, the output head and the MTP modules (which share
// the embedding and head) on the last. The pipeline-parallel trainer and the planner build on it.
#pragma once

#include <cstdint>
#include <vector>

#include "latentmoe/config/config.h"

namespace latentmoe::parallel {

struct PipelineStage {
  int64_t first_layer = 0, layer_count = 0;  // main blocks [first_layer, first_layer + layer_count)
  bool embedding = false;                    // first stage
  bool head = false;                         // last stage: final norm, head, MTP modules
  double forward_flops_per_token = 0;        // this stage's share of FlopCounts::forward + mtp_forward
};

// `stages` consecutive stages of at least one block each, minimizing the largest stage's forward
// FLOPs per token. Throws ConfigError when stages < 1 or exceeds the blocks
// (model.num_hidden_layers), naming both numbers.
std::vector<PipelineStage> plan_pipeline_stages(const config::ModelConfig& model, int64_t seq_len, int64_t stages);

}  // namespace latentmoe::parallel
