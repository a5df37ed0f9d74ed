// The trainer's answers to a bad step or a bad machine: the loss-spike test, the rerun diagnosis
// (train.spike_action=rerun) and the replica check (train.replica_check_interval).
#include <fmt/format.h>

#include <algorithm>
#include <cmath>

#include "latentmoe/train/trainer.h"
#include "latentmoe/util/error.h"
#include "latentmoe/util/host.h"
#include "latentmoe/util/log.h"

namespace latentmoe::train {

namespace {
// "STEP:RANK[:once|always]" (test hooks only; malformed values are a test bug, so they throw).
template <class Fault>
void parse_test_fault(const char* name, Fault& fault) {
  const char* v = std::getenv(name);
  if (!v || !*v) return;
  const std::string text(v);
  const size_t colon = text.find(':');
  if (colon == std::string::npos) throw ConfigError(fmt::format("{}='{}': expected STEP:RANK[:once|always]", name, text));
  fault.step = std::stoll(text.substr(0, colon));
  const size_t second = text.find(':', colon + 1);
  fault.rank = std::stoi(text.substr(colon + 1, second == std::string::npos ? std::string::npos : second - colon - 1));
  fault.always = second != std::string::npos && text.substr(second + 1) == "always";
}
}  // namespace

void Trainer::setup_fault_checks() {
  parse_test_fault("LATENTMOE_TEST_SPIKE", test_spike_);
  parse_test_fault("LATENTMOE_TEST_CORRUPT_REPLICA", test_corrupt_replica_);
  if (cfg_.train.replica_check_interval > 0 && !parallel_->holds_replicas()) {
    LMOE_WARN("train.replica_check_interval={}: a single process holds no replicas, so there is nothing to compare",
              cfg_.train.replica_check_interval);
  }
}

bool Trainer::is_spike(const StepRecord& r, double* z_out, double* mean_out) const {
  const auto& t = cfg_.train;
  if (t.spike_zscore <= 0 || static_cast<int64_t>(loss_window_.size()) < t.spike_window) return false;
  double mean = 0, var = 0;
  for (double l : loss_window_) mean += l;
  mean /= static_cast<double>(loss_window_.size());
  for (double l : loss_window_) var += (l - mean) * (l - mean);
  const double std_dev = std::sqrt(var / static_cast<double>(loss_window_.size() - 1));
  if (std_dev <= 0) return false;
  const double z = (r.loss - mean) / std_dev;
  if (z_out) *z_out = z;
  if (mean_out) *mean_out = mean;
  return z > t.spike_zscore;
}

std::string Trainer::describe_step_samples() const {
  const int64_t first = consumed_samples_, count = batches_->global_batch(tokens_seen_);
  constexpr int64_t kShown = 4;
  std::string out = fmt::format("global samples [{}, {})", first, first + count);
  for (int64_t i = 0; i < std::min(count, kShown); ++i) {
    out += fmt::format("{} {} = {}", i == 0 ? ":" : ";", first + i, train_data_->describe_sample(first + i));
  }
  if (count > kShown) out += fmt::format("; and {} more", count - kShown);
  return out;
}

int Trainer::rerun_diagnosis(const StepRecord& r, const std::string& what) {
  const StepFingerprint first = fingerprint_;
  LMOE_WARN("{} at step {} (loss {:.6g}, grad norm {:.6g}): re-executing it from the same state (train.spike_action=rerun)",
            what, r.step, r.loss, r.grad_norm);
  balancer_->counts().zero_();  // the first execution's routing counts
  const StepRecord again = train_step();
  const RerunVerdict verdict = compare_rerun(comm_, first, fingerprint_);
  if (verdict.identical()) {
    LMOE_WARN("{} at step {} reproduced bit for bit on rerun: caused by the data or the model, not the machine; {}",
              what, r.step, describe_step_samples());
    return 0;
  }
  const bool mine = std::find(verdict.differing_ranks.begin(), verdict.differing_ranks.end(), rank_) != verdict.differing_ranks.end();
  if (mine) {
    LMOE_ERROR("this is rank {} on host {}: its own losses or gradients of step {} changed on rerun", rank_, host_name(), r.step);
  }
  const std::string where = verdict.differing_ranks.empty()
                                ? std::string("the collectives (every rank reproduced its own results, their reduction did not)")
                                : describe_ranks(verdict.differing_ranks) + " (whose own losses or gradients changed)";
  LMOE_ERROR("{} at step {} did not reproduce on rerun from the same state (loss {:.9g} then {:.9g}, grad norm {:.9g} "
             "then {:.9g}): a non-deterministic fault of the machine on {}. Stopped before the update, nothing saved; "
             "take that host out of service and resume from {}",
             what, r.step, r.loss, again.loss, r.grad_norm, again.grad_norm, where, last_checkpoint_.value_or("scratch"));
  optimizer_->zero_grad();
  metrics_->flush();
  return kExitMachineFault;
}

int Trainer::check_replicas() {
  const std::vector<parallel::ReplicaGroup> groups = parallel_->replica_groups();
  if (groups.empty()) return 0;
  torch::NoGradGuard no_grad;
  // Under ZeRO-1 the moments are sharded, not replicated: only the parameters are compared.
  const bool moments = !parallel_->zero1();
  std::vector<std::pair<std::string, ReplicaVerdict>> verdicts;
  for (size_t g = 0; g < groups.size(); ++g) {
    uint64_t h = 0;
    for (size_t i = 0; i < optimizer_->size(); ++i) {
      const auto slot = optimizer_->slot(i);
      if (!groups[g].holds(slot.name)) continue;
      h = tensor_fingerprint(slot.param, h);
      if (moments && slot.exp_avg.defined()) h = tensor_fingerprint(slot.exp_avg_sq, tensor_fingerprint(slot.exp_avg, h));
    }
    std::string what = groups[g].what;
    if (g == 0) {  // the world's group also holds the buffers (the expert biases)
      for (const auto& b : model_->named_buffers()) h = tensor_fingerprint(b.value(), h);
      what = moments ? "the replicated parameters and their AdamW moments" : "the replicated parameters";
    }
    verdicts.emplace_back(what, compare_replicas(*groups[g].comm, h, g == 0 ? "dense" : "expert"));
  }
  // A divergence seen in any group stops every rank (a group that stopped alone would hang the rest).
  bool diverged = false;
  for (const auto& [what, v] : verdicts) diverged = diverged || !v.consistent();
  if (parallel_->all_agree(diverged ? 1 : 0, "replica-check verdict") && !diverged) return 0;
  for (const auto& [what, v] : verdicts) {
    if (v.consistent()) continue;
    if (v.majority) {
      LMOE_ERROR("replica check after step {}: {} on {} differ from the copy most ranks hold (rank {}'s): a silent "
                 "fault of the machine (memory or arithmetic) on {}. Stopped before any checkpoint could capture it; "
                 "take that host out of service and resume from {}",
                 step_, what, describe_ranks(v.diverging), v.reference_rank, describe_ranks(v.diverging),
                 last_checkpoint_.value_or("scratch"));
    } else {
      std::vector<int> involved = v.diverging;
      involved.insert(involved.begin(), v.reference_rank);
      LMOE_ERROR("replica check after step {}: {} differ between {}, and no copy is held by a majority: one of these "
                 "machines has a silent fault, but with this many replicas not which (3 or more data-parallel ranks "
                 "tell it). Stopped before any checkpoint could capture it; resume from {}",
                 step_, what, describe_ranks(involved), last_checkpoint_.value_or("scratch"));
    }
  }
  if (!diverged) LMOE_ERROR("replica check after step {}: stopping because another group's replicas diverged", step_);
  metrics_->flush();
  return kExitMachineFault;
}

void Trainer::apply_test_faults_after_update() {
  TestFault& f = test_corrupt_replica_;
  if (f.step != step_ + 1 || f.rank != rank_ || f.fired) return;
  f.fired = true;
  torch::NoGradGuard no_grad;
  model_->parameters().front().view(-1)[0].add_(1.0);  // as a flipped bit in one replica
}

}  // namespace latentmoe::train
