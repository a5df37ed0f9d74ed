// c10d process groups over one TCPStore (the only file besides nccl_backend.cpp with c10d
// headers), and the heartbeat that lets a failed collective name the rank that was lost.
#include "latentmoe/parallel/communicator.h"

#include <fmt/format.h>
#include <fmt/ranges.h>
#include <torch/csrc/distributed/c10d/PrefixStore.hpp>
#include <torch/csrc/distributed/c10d/ProcessGroupGloo.hpp>
#include <torch/csrc/distributed/c10d/TCPStore.hpp>

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <exception>
#include <cstdlib>
#include <functional>
#include <future>
#include <mutex>
#include <regex>
#include <thread>

#include "c10d_backends.h"
#include "latentmoe/parallel/network.h"
#include "latentmoe/util/error.h"
#include "latentmoe/util/host.h"
#include "latentmoe/util/log.h"

namespace latentmoe::parallel {

namespace {
std::optional<std::string> env_var(const char* name) {
  const char* v = std::getenv(name);
  return v && *v ? std::optional<std::string>(v) : std::nullopt;
}

int env_int(const char* name, int fallback, int min_value) {
  const auto v = env_var(name);
  if (!v) return fallback;
  try {
    size_t used = 0;
    const int value = std::stoi(*v, &used);
    if (used != v->size() || value < min_value) throw std::invalid_argument(*v);
    return value;
  } catch (const std::exception&) {
    throw ConfigError(fmt::format("environment {}='{}' must be an integer >= {}", name, *v, min_value));
  }
}

std::string first_line(const std::string& text) { return text.substr(0, text.find('\n')); }

// Where this rank's Gloo pairs listen, and how to say so in the start-up line and in errors.
detail::GlooBinding choose_gloo_binding(const DistributedEnv& e) {
  detail::GlooBinding b;
  if (const auto ifnames = env_var("GLOO_SOCKET_IFNAME")) {  // an explicit choice wins
    b.interfaces = checked_interface_names(*ifnames, "GLOO_SOCKET_IFNAME");
    for (const auto& i : network_interfaces()) {
      if (i.name == b.interfaces.front() && b.address.empty()) b.address = i.address;
    }
    b.why = fmt::format("GLOO_SOCKET_IFNAME={}", *ifnames);
  } else if (is_loopback_host(e.master_addr)) {
    b.address = e.master_addr == "localhost" ? "127.0.0.1" : e.master_addr;
    b.why = fmt::format("MASTER_ADDR={} is this host", e.master_addr);
  } else {
    const Route route = route_toward(e.master_addr, e.master_port, "MASTER_ADDR");
    b.address = route.address;
    if (!route.interface.empty()) b.interfaces = {route.interface};
    b.why = fmt::format("the route toward MASTER_ADDR={} ({})", e.master_addr, route.peer);
  }
  return b;
}

std::string describe_binding(const detail::GlooBinding& b) {
  return fmt::format("{}{}", b.interfaces.empty() ? std::string() : fmt::format("{} ", fmt::join(b.interfaces, ",")),
                     b.address);
}

// Store calls can block without limit on a dead link (the client's timeout bounds waits, not a
// reply that never comes): the failure paths run them on a helper thread that is abandoned after
// `limit`. The helper owns (copies or shared pointers of) everything it touches.
bool run_bounded(std::function<void()> fn, std::chrono::milliseconds limit) {
  auto done = std::make_shared<std::promise<void>>();
  std::future<void> finished = done->get_future();
  std::thread([fn = std::move(fn), done] {
    try {
      fn();
    } catch (...) {
    }
    done->set_value();
  }).detach();
  return finished.wait_for(limit) == std::future_status::ready;
}

void bounded_set(const c10::intrusive_ptr<c10d::Store>& store, std::string key, std::vector<uint8_t> value,
                 std::chrono::milliseconds limit) {
  run_bounded([store, key = std::move(key), value = std::move(value)] { store->set(key, value); }, limit);
}

constexpr auto kHeartbeatPeriod = std::chrono::milliseconds(250);
constexpr auto kHeartbeatSilence = std::chrono::milliseconds(2000);  // no beat for this long = lost
// While training, a rank whose heartbeat stops for this long is lost (a dead host, a partition),
// whatever parallel.timeout_s allows a collective: rank 0 watches every rank's counter and
// announces the loss; a rank that cannot reach the store for this long stops on its own.
constexpr auto kLostAfter = std::chrono::seconds(15);

int64_t now_ms() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

// Keys are prefixed by torchrun's restart count so that a restarted job never reads its
// predecessor's keys.
std::string store_prefix() { return "latentmoe/" + env_var("TORCHELASTIC_RESTART_COUNT").value_or("0"); }
// Set (with the reason) when every rank must stop: read by each rank's heartbeat.
std::string abort_key(const std::string& prefix) { return prefix + "/abort"; }

std::string store_key(const std::string& prefix, const char* kind, int rank) {
  return fmt::format("{}/{}/{}", prefix, kind, rank);
}

// "rank 0 (host node-a, eth0 10.0.0.1)", from what the rank published (or "(... never joined)").
std::string describe_rank_from(c10d::Store& probe, const std::string& prefix, int rank) {
  const std::string key = store_key(prefix, "net", rank);
  if (!probe.check({key})) return fmt::format("rank {} (not in the store: it never joined)", rank);
  const std::vector<uint8_t> raw = probe.get(key);
  const std::string text(raw.begin(), raw.end());
  const size_t bar = text.find('|');
  return fmt::format("rank {} (host {}, {})", rank, text.substr(0, bar), bar == std::string::npos ? "" : text.substr(bar + 1));
}

[[noreturn]] void stop_process(const std::string& message) {
  LMOE_ERROR("{}", message);
  std::fprintf(stderr, "latentmoe: error: %s\n", message.c_str());
  std::fflush(nullptr);
  std::_Exit(1);
}

// What the heartbeat and the monitor need, owned by them (they may outlive a Session stuck on a
// dead link).
struct BeatContext {
  DistributedEnv env;
  std::string prefix, self;  // self: "rank 2 of 4 (host vm, eth0 10.0.0.2)"
};

// A background thread that owns what it touches, so that one stuck in a store call on a dead link
// can be left behind: stop() wakes it, joins it if it ends within `limit`, else detaches it.
class OwnedThread {
 public:
  class StopFlag {
   public:
    // Sleeps up to `period`; false once stop() was called.
    bool sleep(std::chrono::milliseconds period) {
      std::unique_lock<std::mutex> lock(mutex_);
      return !wake_.wait_for(lock, period, [this] { return stop_; });
    }

   private:
    friend class OwnedThread;
    std::mutex mutex_;
    std::condition_variable wake_;
    bool stop_ = false;
  };

  OwnedThread() = default;
  // body(StopFlag&) runs until the flag is stopped (or forever, if it never checks).
  template <class Body>
  explicit OwnedThread(Body body) {
    thread_ = std::thread([state = state_, body = std::move(body)]() mutable {
      body(state->flag);
      state->exited.set_value();
    });
    exited_ = state_->exited.get_future();
  }
  void stop(std::chrono::milliseconds limit) {
    if (!thread_.joinable()) return;
    {
      std::lock_guard<std::mutex> lock(state_->flag.mutex_);
      state_->flag.stop_ = true;
    }
    state_->flag.wake_.notify_all();
    if (exited_.wait_for(limit) == std::future_status::ready) {
      thread_.join();
    } else {
      thread_.detach();
    }
  }

 private:
  struct State {
    StopFlag flag;
    std::promise<void> exited;
  };
  std::shared_ptr<State> state_ = std::make_shared<State>();
  std::future<void> exited_;
  std::thread thread_;
};

// Every kHeartbeatPeriod: count this rank's beat, stop if rank 0 announced a lost rank, and on
// rank 0 look for ranks whose counter stalled for kLostAfter (ranks that finished or failed on
// their own are not lost).
void heartbeat_loop(OwnedThread::StopFlag& flag, std::atomic<int64_t>& last_ok_ms,
                    const c10::intrusive_ptr<c10d::Store>& store, const BeatContext& c) {
  const std::string abort = abort_key(c.prefix), mine = store_key(c.prefix, "heartbeat", c.env.rank);
  std::vector<int64_t> last(static_cast<size_t>(c.env.world_size), -1), changed(last.size(), now_ms());
  int64_t ticks = 0;
  while (flag.sleep(kHeartbeatPeriod)) {
    try {
      store->add(mine, 1);
      last_ok_ms = now_ms();
      if (store->check({abort})) {
        const std::vector<uint8_t> raw = store->get(abort);
        stop_process(fmt::format("{}: stopping: {}", c.self, std::string(raw.begin(), raw.end())));
      }
      if (c.env.rank == 0 && ++ticks % 4 == 0) {
        std::vector<std::string> lost;
        for (int r = 1; r < c.env.world_size; ++r) {
          const size_t i = static_cast<size_t>(r);
          const int64_t beats = store->add(store_key(c.prefix, "heartbeat", r), 0);
          if (beats != last[i]) {
            last[i] = beats;
            changed[i] = now_ms();
          } else if (now_ms() - changed[i] > std::chrono::milliseconds(kLostAfter).count() &&
                     !store->check({store_key(c.prefix, "done", r)}) && !store->check({store_key(c.prefix, "failed", r)})) {
            lost.push_back(describe_rank_from(*store, c.prefix, r));
          }
        }
        if (!lost.empty()) {
          const std::string message = fmt::format("lost {} (no heartbeat for {} s: the host is down or unreachable)",
                                                  fmt::join(lost, ", "), kLostAfter.count());
          store->set(abort, std::vector<uint8_t>(message.begin(), message.end()));
          std::this_thread::sleep_for(std::chrono::milliseconds(1500));  // the others read it, then the store goes
          stop_process(fmt::format("{}: {}", c.self, message));
        }
      }
    } catch (const std::exception&) {
      // The store is unreachable (its host died, or a transient error): keep trying; the monitor
      // stops this rank if it lasts.
    }
  }
}

// Store-free (a call on a dead link can block forever): stops this rank when no beat has
// reached the store for kLostAfter.
void monitor_loop(OwnedThread::StopFlag& flag, const std::atomic<int64_t>& last_ok_ms, const BeatContext& c) {
  while (flag.sleep(std::chrono::seconds(1))) {
    const int64_t silent = now_ms() - last_ok_ms.load();
    if (silent > std::chrono::milliseconds(kLostAfter).count()) {
      stop_process(fmt::format("{}: the rendezvous store at {}:{} has been unreachable for {} s: lost node 0 ({}, "
                               "MASTER_ADDR) or the link to it", c.self, c.env.master_addr, c.env.master_port,
                               silent / 1000, c.env.master_addr));
    }
  }
}

// The rendezvous connection (`rendezvous`: counts itself in and waits for all ranks) or an extra
// client connection of the same process.
c10::intrusive_ptr<c10d::TCPStore> connect_store(const DistributedEnv& e, bool server, bool rendezvous,
                                                 std::chrono::milliseconds timeout) {
  c10d::TCPStoreOptions options;
  options.port = static_cast<uint16_t>(e.master_port);
  options.isServer = server;
  options.numWorkers = rendezvous ? std::optional<size_t>(static_cast<size_t>(e.world_size)) : std::nullopt;
  options.waitWorkers = rendezvous;
  options.timeout = timeout;
  return c10::make_intrusive<c10d::TCPStore>(e.master_addr, options);
}

// What every group of one process shares: the store, the backend kind, and the heartbeat.
class Session {
 public:
  Session(const DistributedEnv& e, std::string backend, std::chrono::seconds timeout)
      : env(e), backend(std::move(backend)), timeout(timeout) {
    if (this->backend == "gloo") binding = choose_gloo_binding(e);
    // Under torchrun the elastic agent already serves the store on MASTER_PORT: join it.
    agent_store_ = env_or("TORCHELASTIC_USE_AGENT_STORE", "") == "True";
    prefix = store_prefix();
    hosts_store_ = e.rank == 0 && !agent_store_;
    store = connect_store(e, hosts_store_, true, timeout);
    // The heartbeat has its own connection so it never waits behind a blocking store call.
    heartbeat_store = connect_store(e, false, false, std::min<std::chrono::milliseconds>(timeout, std::chrono::seconds(5)));
    heartbeat_store->add(beat_key(e.rank), 1);
    // What peers need to name this rank when they cannot reach it.
    const std::string me = fmt::format("{}|{}", host_name(), describe_binding(binding));
    heartbeat_store->set(net_key(e.rank), std::vector<uint8_t>(me.begin(), me.end()));
    const BeatContext context{.env = e, .prefix = prefix,
                              .self = fmt::format("rank {} of {} (host {}, {})", e.rank, e.world_size, host_name(),
                                                  describe_binding(binding))};
    auto last_ok_ms = std::make_shared<std::atomic<int64_t>>(now_ms());  // the last beat the store acknowledged
    heartbeat_ = OwnedThread([last_ok_ms, store = heartbeat_store, context](OwnedThread::StopFlag& flag) {
      heartbeat_loop(flag, *last_ok_ms, store, context);
    });
    monitor_ = OwnedThread([last_ok_ms, context](OwnedThread::StopFlag& flag) { monitor_loop(flag, *last_ok_ms, context); });
  }

  std::string describe_rank(c10d::Store& probe, int rank) const { return describe_rank_from(probe, prefix, rank); }

  // After a failed rendezvous of a group: which member could not be reached, and why that is likely.
  std::string describe_rendezvous_failure(const std::vector<int>& members, const std::string& error) const {
    try {
      auto probe = connect_store(env, false, false, std::chrono::milliseconds(3000));
      std::smatch m;
      const std::string remote = std::regex_search(error, m, std::regex(R"(remote=\[([^\]]+)\]:\d+)")) ? m[1].str() : "";
      std::vector<std::string> unreached, never_joined;
      for (const int r : members) {
        if (r == env.rank) continue;
        const std::string who = describe_rank(*probe, r);
        if (who.find("never joined") != std::string::npos) {
          never_joined.push_back(who);
        } else if (!remote.empty() && who.find(" " + remote + ")") != std::string::npos) {
          unreached.push_back(who);  // every member that advertised the address gloo could not reach
        }
      }
      std::string out;
      for (const auto& who : never_joined) out += "; " + who;
      if (!unreached.empty()) {
        out += fmt::format("; could not connect to {} at {}", fmt::join(unreached, " or "), remote);
        if (is_loopback_host(remote) && !is_loopback_host(env.master_addr)) {
          out += fmt::format(": a loopback address advertised to a multi-host job (MASTER_ADDR={}); on that host set "
                             "GLOO_SOCKET_IFNAME to the interface toward MASTER_ADDR, or unset it (latentmoe then listens "
                             "on that route)", env.master_addr);
        } else {
          out += fmt::format(": check that {} is reachable from host {} (routing, firewall; GLOO_SOCKET_IFNAME picks the "
                             "interface a rank listens on)", remote, host_name());
        }
      }
      return out;
    } catch (const std::exception&) {
      return fmt::format("; the rendezvous store at {}:{} is unreachable", env.master_addr, env.master_port);
    }
  }

  // This rank failed in a rendezvous: the message for the peers still waiting in it.
  void publish_failure(const std::string& message) {
    bounded_set(heartbeat_store, failure_key(env.rank), std::vector<uint8_t>(message.begin(), message.end()),
                std::chrono::seconds(2));
    mark_failed(kOwnError);
  }

  // While this rank waits in a group's rendezvous (which gloo does not interrupt), a peer that
  // failed in it makes this rank exit within a second or two instead of at the timeout.
  class RendezvousWatch {
   public:
    RendezvousWatch(std::shared_ptr<const Session> session, std::vector<int> members, std::string group)
        : thread_([session = std::move(session), members = std::move(members), group = std::move(group)](
                      OwnedThread::StopFlag& flag) {
            try {
              auto probe = connect_store(session->env, false, false, std::chrono::milliseconds(3000));
              while (flag.sleep(kHeartbeatPeriod)) {
                for (const int r : members) {
                  if (r == session->env.rank || !probe->check({session->failure_key(r)})) continue;
                  const std::vector<uint8_t> raw = probe->get(session->failure_key(r));
                  stop_process(fmt::format("rank {} of {}: the rendezvous of group {} cannot complete: {} failed in it: {}",
                                           session->env.rank, session->env.world_size, group,
                                           session->describe_rank(*probe, r), std::string(raw.begin(), raw.end())));
                }
              }
            } catch (const std::exception&) {
              // no store: the rendezvous itself fails and says so
            }
          }) {}
    ~RendezvousWatch() { thread_.stop(std::chrono::seconds(2)); }  // stuck on a dead link: left behind

   private:
    OwnedThread thread_;
  };
  ~Session() {
    // Unwinding from an error, or destroyed after one was caught and reported (the process then
    // exits with its code, not with an exception in flight): peers may still need the store.
    if (std::uncaught_exceptions() > 0 || marked_) {
      mark_failed(kOwnError);
      mark_diagnosed();  // done with the store (a collective failure was diagnosed before the throw)
      // The store dies with this process when it hosts it, and with node 0's torchrun agent when
      // the agent serves it (the agent shuts down as soon as its workers fail): either way, wait
      // until the peers have read this rank's failure.
      if (hosts_store_ || agent_store_) linger();
    } else {  // finished: rank 0 must not take the silence that follows for a lost rank
      bounded_set(heartbeat_store, store_key(prefix, "done", env.rank), {'1'}, std::chrono::seconds(1));
    }
    heartbeat_.stop(std::chrono::seconds(1));  // a beat stuck on a dead link is left behind
    monitor_.stop(std::chrono::seconds(2));    // store-free: it wakes within a second
  }

  // Called after a collective failed: which ranks stopped beating? (Takes ~2 s.) Ranks that
  // marked themselves failed are not the lost ones: they are named apart, with their cause.
  static std::string diagnose(const std::shared_ptr<const Session>& session) {
    auto result = std::make_shared<std::string>();
    const bool finished = run_bounded([session, result] { *result = session->diagnose_unbounded(); },
                                      kHeartbeatSilence + std::chrono::seconds(3));
    return finished ? *result : session->unreachable_store();
  }
  std::string unreachable_store() const {
    const bool agent_store = env_or("TORCHELASTIC_USE_AGENT_STORE", "") == "True";
    return fmt::format("the rendezvous store at {}:{} is unreachable from host {} ({}): lost {} at {}, or the link to it",
                       env.master_addr, env.master_port, host_name(), describe_binding(binding),
                       agent_store ? "the torchrun agent of node 0" : "rank 0 (it hosts the store)", env.master_addr);
  }
  std::string diagnose_unbounded() const {
    try {
      auto probe = connect_store(env, false, false, std::chrono::milliseconds(3000));
      std::vector<int64_t> before(static_cast<size_t>(env.world_size));
      for (int r = 0; r < env.world_size; ++r) before[static_cast<size_t>(r)] = probe->add(beat_key(r), 0);
      std::this_thread::sleep_for(kHeartbeatSilence);
      std::vector<int> lost, own_error, gave_up;
      for (int r = 0; r < env.world_size; ++r) {
        if (r == env.rank) continue;
        if (probe->check({failed_key(r)})) {
          (probe->get(failed_key(r)) == kOwnError ? own_error : gave_up).push_back(r);
        } else if (probe->add(beat_key(r), 0) == before[static_cast<size_t>(r)]) {
          lost.push_back(r);
        }
      }
      const auto ranks = [](const std::vector<int>& v) { return fmt::format("rank{} {}", v.size() > 1 ? "s" : "", fmt::join(v, ", ")); };
      std::vector<std::string> lost_described;  // with their hosts and addresses: a lost host is named
      for (const int r : lost) lost_described.push_back(describe_rank(*probe, r));
      std::string out = lost.empty() ? "" : fmt::format("lost {} (no heartbeat for {} s: {})", ranks(lost),
                                                        std::chrono::duration<double>(kHeartbeatSilence).count(),
                                                        fmt::join(lost_described, ", "));
      if (!own_error.empty()) out += (out.empty() ? "" : "; ") + ranks(own_error) + " stopped on an error of its own";
      if (!gave_up.empty()) out += (out.empty() ? "" : "; ") + ranks(gave_up) + " failed in a collective too";
      if (lost.empty() && own_error.empty()) {
        out += (out.empty() ? "" : "; ") + fmt::format("every other rank is alive, so a peer is stuck or slow (parallel.timeout_s={})",
                                                       timeout.count());
      }
      return out;
    } catch (const std::exception&) {
      return unreachable_store();
    }
  }

  // This rank is about to exit on an error (the first cause recorded wins): peers must not report
  // it as the lost one.
  static inline const std::vector<uint8_t> kOwnError{'o', 'w', 'n'}, kCollectiveError{'p', 'e', 'e', 'r'};
  void mark_failed(const std::vector<uint8_t>& cause) {
    if (marked_.exchange(true)) return;
    bounded_set(heartbeat_store, failed_key(env.rank), cause, std::chrono::seconds(1));
  }

  // This rank no longer needs the store: its failure report is complete. The store host lingers
  // until every live peer has said so (marking "failed" alone is too early: the diagnosis that
  // follows still reads the store for a couple of seconds).
  void mark_diagnosed() {
    if (!diagnosed_.exchange(true)) bounded_set(heartbeat_store, diagnosed_key(env.rank), {'1'}, std::chrono::seconds(1));
  }

  DistributedEnv env;
  std::string backend;  // "gloo" or "nccl"
  detail::GlooBinding binding;  // where gloo listens (gloo only)
  std::chrono::seconds timeout;
  std::string prefix;
  c10::intrusive_ptr<c10d::Store> store, heartbeat_store;

 private:
  static std::string env_or(const char* name, const std::string& fallback) { return env_var(name).value_or(fallback); }
  std::string beat_key(int rank) const { return store_key(prefix, "heartbeat", rank); }
  std::string failed_key(int rank) const { return store_key(prefix, "failed", rank); }
  std::string diagnosed_key(int rank) const { return store_key(prefix, "diagnosed", rank); }
  std::string net_key(int rank) const { return store_key(prefix, "net", rank); }
  std::string failure_key(int rank) const { return store_key(prefix, "failure", rank); }
  // The store dies with this process: give the other ranks time to diagnose through it (until
  // each has finished its diagnosis or stopped beating, at most a few seconds).
  void linger() const {
    const auto deadline = std::chrono::steady_clock::now() + kHeartbeatSilence + std::chrono::seconds(3);
    try {
      auto probe = connect_store(env, false, false, std::chrono::milliseconds(1000));
      std::vector<int64_t> last(static_cast<size_t>(env.world_size), -1);
      while (std::chrono::steady_clock::now() < deadline) {
        bool waiting = false;
        for (int r = 0; r < env.world_size; ++r) {
          if (r == env.rank || probe->check({diagnosed_key(r)})) continue;
          const int64_t beats = probe->add(beat_key(r), 0);
          waiting = waiting || beats != last[static_cast<size_t>(r)];  // still alive and not yet done
          last[static_cast<size_t>(r)] = beats;
        }
        if (!waiting) return;
        std::this_thread::sleep_for(kHeartbeatSilence / 2);
      }
    } catch (const std::exception&) {
    }
  }
  bool hosts_store_ = false, agent_store_ = false;
  std::atomic<bool> marked_{false}, diagnosed_{false};
  OwnedThread heartbeat_, monitor_;
};

class C10dCommunicator;

class C10dPending final : public PendingCollective {
 public:
  C10dPending(const C10dCommunicator& comm, c10::intrusive_ptr<c10d::Work> work, std::string what,
              std::vector<std::pair<at::Tensor, at::Tensor>> copy_back)
      : comm_(comm), work_(std::move(work)), what_(std::move(what)), copy_back_(std::move(copy_back)) {}
  void wait() override;

 private:
  const C10dCommunicator& comm_;
  c10::intrusive_ptr<c10d::Work> work_;
  std::string what_;
  std::vector<std::pair<at::Tensor, at::Tensor>> copy_back_;  // (caller's tensor, staged device copy)
};

class C10dCommunicator final : public Communicator {
 public:
  // backend_ is null for a one-rank group: every collective is then local.
  C10dCommunicator(std::shared_ptr<Session> session, std::string name, std::vector<int> ranks)
      : session_(std::move(session)), name_(std::move(name)), ranks_(std::move(ranks)) {
    const auto it = std::find(ranks_.begin(), ranks_.end(), session_->env.rank);
    if (it == ranks_.end()) {
      throw std::logic_error(fmt::format("rank {} is not a member of group {}", session_->env.rank, name_));
    }
    rank_ = static_cast<int>(it - ranks_.begin());
    if (ranks_.size() == 1) return;
    const auto timeout = std::chrono::duration_cast<std::chrono::milliseconds>(session_->timeout);
    auto store = c10::make_intrusive<c10d::PrefixStore>(session_->prefix + "/group/" + name_, session_->store);
    const int size = static_cast<int>(ranks_.size());
    try {
      const Session::RendezvousWatch watch(session_, ranks_, name_);
      if (session_->backend == "nccl") {
        device_ = c10::Device(c10::kCUDA, static_cast<c10::DeviceIndex>(session_->env.local_rank));
        backend_ = detail::make_nccl_backend(store, rank_, size, session_->env.local_rank, timeout);
      } else {
        backend_ = detail::make_gloo_backend(store, rank_, size, session_->binding, timeout);
      }
    } catch (const ConfigError&) {
      throw;
    } catch (const std::exception& e) {
      const std::string message =
          fmt::format("rank {} (host {}, {}): rendezvous of group {} ({} ranks) failed{}: {}", global_rank(), host_name(),
                      describe_binding(session_->binding), name_, size,
                      session_->describe_rendezvous_failure(ranks_, e.what()), first_line(e.what()));
      session_->publish_failure(message);
      throw std::runtime_error(message);
    }
  }

  ~C10dCommunicator() override {
    // Before the backend's destructor, which may wait for work in flight: peers must learn now
    // that this rank is leaving on an error, not lost.
    if (std::uncaught_exceptions() > 0) session_->mark_failed(Session::kOwnError);
  }

  int rank() const override { return rank_; }
  int world_size() const override { return static_cast<int>(ranks_.size()); }
  int global_rank() const override { return session_->env.rank; }
  const std::string& name() const override { return name_; }

  std::unique_ptr<Communicator> subgroup(const std::string& name, const std::vector<int>& global_ranks) override {
    return std::make_unique<C10dCommunicator>(session_, name, global_ranks);
  }

  void all_reduce_sum(at::Tensor& tensor, const std::string& what) override { all_reduce_sum_async(tensor, what)->wait(); }

  std::unique_ptr<PendingCollective> all_reduce_sum_async(at::Tensor& tensor, const std::string& what) override {
    std::vector<std::pair<at::Tensor, at::Tensor>> copy_back;
    std::vector<at::Tensor> tensors{stage(tensor, true, copy_back)};
    return start(what, [&] { return backend_->allreduce(tensors); }, std::move(copy_back));
  }

  std::unique_ptr<PendingCollective> reduce_scatter_sum_async(at::Tensor& output, at::Tensor& input,
                                                              const std::string& what) override {
    return start_into(output, input, what, [&](at::Tensor& out, at::Tensor& in) { return backend_->_reduce_scatter_base(out, in); });
  }

  void all_gather(at::Tensor& output, at::Tensor& input, const std::string& what) override {
    start_into(output, input, what, [&](at::Tensor& out, at::Tensor& in) { return backend_->_allgather_base(out, in); })->wait();
  }

  void barrier(const std::string& what) override {
    start(what, [&] { return backend_->barrier(); }, {})->wait();
  }

  void all_to_all(at::Tensor& output, at::Tensor& input, std::vector<int64_t> output_splits,
                  std::vector<int64_t> input_splits, const std::string& what) override {
    start_into(output, input, what, [&](at::Tensor& out, at::Tensor& in) {
      return backend_->alltoall_base(out, in, output_splits, input_splits);
    })->wait();
  }

  // "rank 1 of 4: gradient all-reduce (group world) failed: lost rank 3 (...); gloo: ..."
  [[noreturn]] void fail(const std::string& what, const std::exception& e) const {
    session_->mark_failed(Session::kCollectiveError);
    const std::string diagnosis = Session::diagnose(session_);
    session_->mark_diagnosed();
    throw std::runtime_error(fmt::format("rank {} of {}: {} (group {}, {} ranks) failed: {}; {}: {}", global_rank(),
                                         session_->env.world_size, what, name_, ranks_.size(), diagnosis,
                                         session_->backend, first_line(e.what())));
  }

 private:
  // NCCL works on the rank's GPU: CPU tensors are staged there (and copied back when written).
  at::Tensor stage(at::Tensor& t, bool read, std::vector<std::pair<at::Tensor, at::Tensor>>& copy_back) {
    if (!device_ || t.device() == *device_) return t;
    at::Tensor staged = read ? t.to(*device_) : at::empty_like(t, t.options().device(*device_));
    copy_back.emplace_back(t, staged);
    return staged;
  }

  // Launches unless this is a one-rank group (no backend: nothing to exchange).
  template <class F>
  std::unique_ptr<PendingCollective> start(const std::string& what, F&& launch,
                                           std::vector<std::pair<at::Tensor, at::Tensor>> copy_back) {
    c10::intrusive_ptr<c10d::Work> work;
    if (backend_) {
      try {
        work = launch();
      } catch (const std::exception& e) {
        fail(what, e);
      }
    }
    return std::make_unique<C10dPending>(*this, std::move(work), what, std::move(copy_back));
  }

  // Collectives writing `output` from `input`: launch(out, in) on the staged tensors; in a
  // one-rank group the result is the input itself.
  template <class F>
  std::unique_ptr<PendingCollective> start_into(at::Tensor& output, at::Tensor& input, const std::string& what, F&& launch) {
    if (!backend_) output.copy_(input);
    std::vector<std::pair<at::Tensor, at::Tensor>> copy_back;
    at::Tensor out = stage(output, false, copy_back), in = stage(input, true, copy_back);
    return start(what, [&] { return launch(out, in); }, std::move(copy_back));
  }

  std::shared_ptr<Session> session_;
  std::string name_;
  std::vector<int> ranks_;
  int rank_ = 0;
  std::optional<c10::Device> device_;
  c10::intrusive_ptr<c10d::Backend> backend_;
};

void C10dPending::wait() {
  if (!work_) return;
  try {
    work_->wait();
  } catch (const std::exception& e) {
    comm_.fail(what_, e);
  }
  for (auto& [target, staged] : copy_back_) target.copy_(staged);
}
}  // namespace

namespace detail {
c10::intrusive_ptr<c10d::Backend> make_gloo_backend(const c10::intrusive_ptr<c10d::Store>& store, int rank, int size,
                                                    const GlooBinding& binding, std::chrono::milliseconds timeout) {
  auto options = c10d::ProcessGroupGloo::Options::create(timeout);
  if (binding.interfaces.size() > 1 || (binding.interfaces.size() == 1 && binding.address.empty())) {
    for (const auto& name : binding.interfaces) options->devices.push_back(c10d::ProcessGroupGloo::createDeviceForInterface(name));
  } else {  // one address: bind exactly there (an interface's first address could be another family)
    options->devices.push_back(c10d::ProcessGroupGloo::createDeviceForHostname(binding.address));
  }
  return c10::make_intrusive<c10d::ProcessGroupGloo>(store, rank, size, options);
}
}  // namespace detail

namespace {
// A process that cannot take part tells the ranks already waiting, through the abort key their
// heartbeats read, so that they stop within seconds instead of at the rendezvous timeout.
void announce_launch_error(const DistributedEnv& e, const std::string& message) {
  try {
    const auto store = connect_store(e, false, false, std::chrono::milliseconds(3000));
    store->set(abort_key(store_prefix()), std::vector<uint8_t>(message.begin(), message.end()));
  } catch (const std::exception&) {
    // no store reachable: only this process can report it
  }
}
}  // namespace

DistributedEnv distributed_env_from_environment() {
  DistributedEnv e;
  e.world_size = env_int("WORLD_SIZE", 1, 1);
  if (e.world_size == 1) return e;
  if (!env_var("RANK")) throw ConfigError(fmt::format("environment WORLD_SIZE={} but RANK is not set (launch with torchrun)", e.world_size));
  e.rank = env_int("RANK", 0, 0);
  e.local_rank = env_int("LOCAL_RANK", e.rank, 0);
  const auto addr = env_var("MASTER_ADDR");
  if (!addr) throw ConfigError("environment MASTER_ADDR is not set (the rank-0 host; torchrun sets it)");
  e.master_addr = *addr;
  if (!env_var("MASTER_PORT")) throw ConfigError("environment MASTER_PORT is not set (a free TCP port on MASTER_ADDR)");
  e.master_port = env_int("MASTER_PORT", 0, 1);
  if (e.master_port > 65535) throw ConfigError(fmt::format("environment MASTER_PORT={} must be <= 65535", e.master_port));
  // torchrun's static rendezvous does not check --node-rank against --nnodes; with
  // TORCH_ELASTIC_WORKER_IDENTICAL=1 (docs/cluster.md) such a node starts its workers anyway.
  const int64_t node_rank = env_int("GROUP_RANK", 0, 0), nodes = env_int("GROUP_WORLD_SIZE", 1, 1);
  if (node_rank >= nodes) {
    const std::string message = fmt::format(
        "torchrun --node-rank {} on host {} is out of range for --nnodes {} (GROUP_RANK={}, GROUP_WORLD_SIZE={}): node "
        "ranks are 0..{}; give every node its own rank (on Slurm: --node-rank \"$SLURM_NODEID\"), or launch with "
        "--rdzv-backend c10d, which assigns them",
        node_rank, host_name(), nodes, node_rank, nodes, nodes - 1);
    announce_launch_error(e, message);
    throw ConfigError(message);
  }
  if (e.rank >= e.world_size) {
    throw ConfigError(fmt::format("environment RANK={} must be < WORLD_SIZE={}", e.rank, e.world_size));
  }
  return e;
}

std::unique_ptr<Communicator> Communicator::create(const DistributedEnv& e, const std::string& backend,
                                                   std::chrono::seconds timeout) {
  const std::string kind = backend == "auto" ? "gloo" : backend;  // CPU training: gloo
  std::shared_ptr<Session> session;
  try {
    session = std::make_shared<Session>(e, kind, timeout);
  } catch (const ConfigError&) {
    throw;
  } catch (const std::exception& ex) {
    throw std::runtime_error(fmt::format("rank {}: rendezvous with {} ranks at {}:{} failed within {} s: {}", e.rank,
                                         e.world_size, e.master_addr, e.master_port, timeout.count(), first_line(ex.what())));
  }
  std::string nccl;
  for (const char* name : {"NCCL_SOCKET_IFNAME", "NCCL_IB_HCA"}) {
    if (const auto v = env_var(name)) nccl += fmt::format(", {}={}", name, *v);
  }
  if (kind == "gloo") {
    LMOE_INFO("rank {} of {} on host {}: gloo listens on {} ({}){}", e.rank, e.world_size, host_name(),
              describe_binding(session->binding), session->binding.why, nccl);
  } else {
    LMOE_INFO("rank {} of {} on host {}: nccl on cuda:{}{}", e.rank, e.world_size, host_name(), e.local_rank, nccl);
  }
  std::vector<int> all(static_cast<size_t>(e.world_size));
  for (int r = 0; r < e.world_size; ++r) all[static_cast<size_t>(r)] = r;
  return std::make_unique<C10dCommunicator>(session, "world", all);
}

}  // namespace latentmoe::parallel
