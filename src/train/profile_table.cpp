// Self times by category. Scopes the trainer and model open (latentmoe.*) name the phase; ATen op
// names and autograd node names place the rest.
#include "latentmoe/train/profile_table.h"

#include <fmt/format.h>

#include <algorithm>
#include <map>

namespace latentmoe::train {

namespace {
bool contains(const std::string& s, const char* part) { return s.find(part) != std::string::npos; }
bool starts_with(const std::string& s, const char* prefix) { return s.rfind(prefix, 0) == 0; }

bool is_gemm(const std::string& n) {
  static const char* const kGemms[] = {"aten::mm",     "aten::addmm",       "aten::bmm",   "aten::baddbmm",
                                       "aten::_grouped_mm", "aten::addmv",  "aten::mv",    "aten::_scaled_mm",
                                       "aten::dot",    "aten::addbmm",      "aten::_int_mm"};
  for (const char* g : kGemms) {
    if (n == g) return true;
  }
  return false;
}

// The phase a name announces, or "" (scopes first: they are the most specific).
std::string phase_of(const std::string& n) {
  if (starts_with(n, "latentmoe.moe.")) return "MoE routing/dispatch/combine";
  if (starts_with(n, "latentmoe.loss")) return "loss";
  if (starts_with(n, "latentmoe.optimizer")) return "optimizer";
  if (starts_with(n, "latentmoe.comm")) return "communication";
  if (starts_with(n, "latentmoe.rotary") || starts_with(n, "latentmoe::rms_norm") || starts_with(n, "latentmoe::swiglu") ||
      contains(n, "RmsNormFunction") || contains(n, "SwiGluFunction") || contains(n, "SiluBackward") ||
      n == "aten::silu" || n == "aten::rsqrt") {
    return "norm/rope/activation";
  }
  if (contains(n, "scaled_dot_product") || contains(n, "flash_attention") || contains(n, "ScaledDotProduct") ||
      contains(n, "FlashAttention")) {
    return "attention";
  }
  if (contains(n, "IndexAddBackward") || contains(n, "IndexSelectBackward") || n == "latentmoe::expert_token_counts") {
    return "MoE routing/dispatch/combine";
  }
  if (contains(n, "cross_entropy") || contains(n, "log_softmax") || contains(n, "nll_loss") ||
      contains(n, "LogSoftmaxBackward") || contains(n, "NllLossBackward")) {
    return "loss";
  }
  if (contains(n, "adam") || contains(n, "Adam")) return "optimizer";
  if (starts_with(n, "c10d::") || contains(n, "gloo:") || contains(n, "nccl:") || contains(n, "allreduce") ||
      contains(n, "all_to_all") || contains(n, "allgather")) {
    return "communication";
  }
  return "";
}
}  // namespace

const std::vector<std::string>& profile_categories() {
  static const std::vector<std::string> kCategories{"GEMM",
                                                    "attention",
                                                    "MoE routing/dispatch/combine",
                                                    "norm/rope/activation",
                                                    "loss",
                                                    "optimizer",
                                                    "communication",
                                                    "other"};
  return kCategories;
}

std::string profile_category(const std::string& name, const std::vector<const std::string*>& callers) {
  if (is_gemm(name)) return "GEMM";
  if (std::string p = phase_of(name); !p.empty()) return p;
  for (const std::string* caller : callers) {
    if (std::string p = phase_of(*caller); !p.empty()) return p;
  }
  return "other";
}

ProfileTable build_profile_table(const std::vector<ProfiledEvent>& events, const std::string& step_scope) {
  std::map<uint64_t, std::vector<const ProfiledEvent*>> by_thread;
  for (const ProfiledEvent& e : events) by_thread[e.thread].push_back(&e);
  std::map<std::string, double> seconds;
  ProfileTable table;
  double attributed = 0;
  for (auto& [thread, list] : by_thread) {
    // Callers before callees: earlier start first, and the longer of two that start together.
    std::sort(list.begin(), list.end(), [](const ProfiledEvent* a, const ProfiledEvent* b) {
      return a->start_ns != b->start_ns ? a->start_ns < b->start_ns : a->end_ns > b->end_ns;
    });
    struct Open {
      const ProfiledEvent* event;
      uint64_t children_ns;
      bool in_step;
    };
    std::vector<Open> stack;
    const auto close = [&](const Open& o) {
      if (o.event->name == step_scope) {
        table.step_seconds += static_cast<double>(o.event->end_ns - o.event->start_ns) * 1e-9;
        ++table.steps;
        return;
      }
      if (!o.in_step) return;
      std::vector<const std::string*> callers;
      for (auto it = stack.rbegin(); it != stack.rend(); ++it) callers.push_back(&it->event->name);
      const uint64_t duration = o.event->end_ns - o.event->start_ns;
      const double self = static_cast<double>(duration - std::min(duration, o.children_ns)) * 1e-9;
      seconds[profile_category(o.event->name, callers)] += self;
      attributed += self;
    };
    for (const ProfiledEvent* e : list) {
      while (!stack.empty() && stack.back().event->end_ns <= e->start_ns) {
        const Open done = stack.back();
        stack.pop_back();
        close(done);
      }
      const bool in_step = e->name == step_scope || std::any_of(stack.begin(), stack.end(), [](const Open& o) {
                             return o.in_step;
                           });
      if (!stack.empty()) stack.back().children_ns += e->end_ns - e->start_ns;
      stack.push_back({e, 0, in_step});
    }
    while (!stack.empty()) {
      const Open done = stack.back();
      stack.pop_back();
      close(done);
    }
  }
  // Step time on the step's thread outside every op (and the work of threads with no step scope
  // that overlapped it is not step time): the remainder is "other".
  seconds["other"] += std::max(0.0, table.step_seconds - attributed);
  for (const std::string& c : profile_categories()) {
    const double s = seconds[c];
    table.rows.push_back({c, s, table.step_seconds > 0 ? s / table.step_seconds : 0.0});
  }
  return table;
}

std::string format_profile_table(const ProfileTable& table) {
  std::string out = fmt::format("{:<30} {:>12} {:>8}\n", "category", "ms/step", "share");
  const double steps = static_cast<double>(std::max<int64_t>(table.steps, 1));
  for (const CategoryTime& r : table.rows) {
    out += fmt::format("{:<30} {:>12.2f} {:>7.1f}%\n", r.category, r.seconds * 1e3 / steps, r.fraction * 100);
  }
  out += fmt::format("{:<30} {:>12.2f} {:>7.1f}%", "step", table.step_seconds * 1e3 / steps, 100.0);
  return out;
}

}  // namespace latentmoe::train
