// expert_token_counts: reference, CPU kernel and dispatch (the CUDA kernel registers itself in
// expert_counts_cuda.cpp).
#include "latentmoe/ops/expert_counts.h"

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include "ops/op_checks.h"
#include "ops/op_handle.h"

namespace latentmoe::ops {

namespace {
void check_range(const at::Tensor& flat_ids, int64_t num_experts) {
  if (flat_ids.numel() == 0) return;
  const int64_t lo = flat_ids.min().item<int64_t>();
  const int64_t hi = flat_ids.max().item<int64_t>();
  TORCH_CHECK(lo >= 0 && hi < num_experts, "expert_token_counts: expert id ", lo < 0 ? lo : hi,
              " is outside [0, ", num_experts, ")");
}

at::Tensor counts_cpu(const at::Tensor& expert_ids, int64_t num_experts) {
  check_expert_token_counts_inputs(expert_ids, num_experts);
  const at::Tensor ids = expert_ids.to(at::kLong).contiguous().view(-1);
  const int64_t n = ids.numel();
  const int64_t* data = ids.data_ptr<int64_t>();
  // One private histogram per chunk, summed afterwards: no atomics, deterministic.
  constexpr int64_t kGrain = 1 << 15;
  const int64_t chunks = std::max<int64_t>(1, (n + kGrain - 1) / kGrain);
  std::vector<int64_t> partial(static_cast<size_t>(chunks * num_experts), 0);
  std::vector<int64_t> bad_id(static_cast<size_t>(chunks), 0);
  std::vector<char> has_bad(static_cast<size_t>(chunks), 0);
  at::parallel_for(0, chunks, 1, [&](int64_t begin, int64_t end) {
    for (int64_t c = begin; c < end; ++c) {
      int64_t* hist = partial.data() + c * num_experts;
      const int64_t stop = std::min(n, (c + 1) * kGrain);
      for (int64_t i = c * kGrain; i < stop; ++i) {
        const int64_t e = data[i];
        if (static_cast<uint64_t>(e) < static_cast<uint64_t>(num_experts)) {
          ++hist[e];
        } else if (!has_bad[c]) {
          has_bad[c] = 1;
          bad_id[c] = e;
        }
      }
    }
  });
  for (int64_t c = 0; c < chunks; ++c) {
    TORCH_CHECK(!has_bad[c], "expert_token_counts: expert id ", bad_id[c], " is outside [0, ", num_experts, ")");
  }
  at::Tensor out = at::zeros({num_experts}, at::kLong);
  int64_t* counts = out.data_ptr<int64_t>();
  for (int64_t c = 0; c < chunks; ++c) {
    for (int64_t e = 0; e < num_experts; ++e) counts[e] += partial[static_cast<size_t>(c * num_experts + e)];
  }
  return out;
}
}  // namespace

at::Tensor expert_token_counts_reference(const at::Tensor& expert_ids, int64_t num_experts) {
  check_expert_token_counts_inputs(expert_ids, num_experts);
  const at::Tensor flat = expert_ids.reshape(-1).to(at::kLong);
  check_range(flat, num_experts);
  return at::bincount(flat, /*weights=*/{}, /*minlength=*/num_experts);
}

at::Tensor expert_token_counts(const at::Tensor& expert_ids, int64_t num_experts) {
  static const auto op = find_op<at::Tensor(const at::Tensor&, int64_t)>("latentmoe::expert_token_counts");
  return op.call(expert_ids, num_experts);
}

TORCH_LIBRARY_IMPL(latentmoe, CPU, m) { m.impl("expert_token_counts", &counts_cpu); }
TORCH_LIBRARY_IMPL(latentmoe, CompositeExplicitAutograd, m) {
  m.impl("expert_token_counts", &expert_token_counts_reference);
}

}  // namespace latentmoe::ops
