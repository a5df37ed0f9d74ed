// Fingerprints and their cross-rank comparisons (see fault_check.h).
#include "latentmoe/train/fault_check.h"

#include <fmt/format.h>
#include <fmt/ranges.h>

#include <algorithm>
#include <cstring>
#include <map>

#include "latentmoe/parallel/communicator.h"
#include "latentmoe/util/hash.h"

namespace latentmoe::train {

namespace {
// Every rank's (global rank, value) over `comm`, in group rank order.
std::vector<std::pair<int, uint64_t>> gather(parallel::Communicator& comm, uint64_t value, const std::string& what) {
  torch::Tensor mine = torch::tensor({static_cast<int64_t>(comm.global_rank()), static_cast<int64_t>(value)}, torch::kLong);
  torch::Tensor all = torch::empty({2 * comm.world_size()}, torch::kLong);
  comm.all_gather(all, mine, what);
  std::vector<std::pair<int, uint64_t>> out;
  const int64_t* p = all.data_ptr<int64_t>();
  for (int r = 0; r < comm.world_size(); ++r) out.emplace_back(static_cast<int>(p[2 * r]), static_cast<uint64_t>(p[2 * r + 1]));
  return out;
}
}  // namespace

uint64_t tensor_fingerprint(const torch::Tensor& tensor, uint64_t seed) {
  const torch::Tensor t = tensor.detach().to(torch::kCPU).contiguous();
  uint64_t h = fingerprint64(t.data_ptr(), static_cast<size_t>(t.numel()) * t.element_size(), seed);
  for (int64_t d : t.sizes()) h = mix64(h, static_cast<uint64_t>(d));
  return mix64(h, static_cast<uint64_t>(t.scalar_type()));
}

RerunVerdict compare_rerun(parallel::Communicator* comm, const StepFingerprint& first, const StepFingerprint& rerun) {
  const uint64_t bits = (first.local != rerun.local ? 1u : 0u) | (first.reduced != rerun.reduced ? 2u : 0u);
  // Both bits from every rank: a faulty collective may hand different results to some ranks only,
  // and every rank must reach the same verdict (one that went on alone would hang in the next step).
  const auto all = comm ? gather(*comm, bits, "step-rerun comparison") : std::vector<std::pair<int, uint64_t>>{{0, bits}};
  RerunVerdict verdict;
  for (const auto& [rank, rank_bits] : all) {
    if (rank_bits & 1u) verdict.differing_ranks.push_back(rank);
    if (rank_bits & 2u) verdict.reduced_differs = true;
  }
  return verdict;
}

ReplicaVerdict compare_replicas(parallel::Communicator& comm, uint64_t fingerprint, const std::string& what) {
  const auto all = gather(comm, fingerprint, what + " replica check");
  std::map<uint64_t, int> holders;
  for (const auto& [rank, value] : all) ++holders[value];
  int best = 0, tied = 0;
  for (const auto& [value, n] : holders) best = std::max(best, n);
  for (const auto& [value, n] : holders) tied += n == best ? 1 : 0;
  // The reference: the copy most ranks hold; among equals, the one the lowest rank holds.
  ReplicaVerdict verdict;
  verdict.majority = tied == 1;
  uint64_t reference = 0;
  for (const auto& [rank, value] : all) {
    if (holders[value] == best) {
      reference = value;
      verdict.reference_rank = rank;
      break;
    }
  }
  for (const auto& [rank, value] : all) {
    if (value != reference) verdict.diverging.push_back(rank);
  }
  return verdict;
}

std::string describe_ranks(const std::vector<int>& ranks) {
  return fmt::format("{} {}", ranks.size() == 1 ? "rank" : "ranks", fmt::join(ranks, ", "));
}

}  // namespace latentmoe::train
