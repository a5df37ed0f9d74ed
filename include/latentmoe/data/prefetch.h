// Background batch preparation (data.num_workers threads): the trainer queues the micro-batches
// of the coming steps and takes each when it needs it, so reading, packing and FIM's re-encoding
// overlap with the model's compute. Batches are pure functions of (first sample, count), so the
// order threads finish in never changes what is trained on. No torch headers.
#pragma once

#include <condition_variable>
#include <cstdint>
#include <deque>
#include <future>
#include <map>
#include <mutex>
#include <thread>
#include <utility>
#include <vector>

#include "latentmoe/data/loader.h"

namespace latentmoe::data {

class BatchPrefetcher {
 public:
  struct Request {
    int64_t first_sample = 0, count = 0;
    bool operator<(const Request& o) const { return std::pair(first_sample, count) < std::pair(o.first_sample, o.count); }
    bool operator==(const Request&) const = default;
  };

  // workers >= 1 background threads over `loader` (which must outlive this).
  BatchPrefetcher(const DataLoader& loader, int64_t workers);
  ~BatchPrefetcher();
  BatchPrefetcher(const BatchPrefetcher&) = delete;
  BatchPrefetcher& operator=(const BatchPrefetcher&) = delete;

  // Queues the requests not already queued, in order.
  void prefetch(const std::vector<Request>& requests);
  // The batch of samples [first_sample, first_sample + count): waits for a queued one (rethrowing
  // its error), or prepares it on the calling thread when it was not queued.
  Batch get(int64_t first_sample, int64_t count);
  int64_t queued() const;

 private:
  void work();
  void stop();

  const DataLoader& loader_;
  mutable std::mutex mutex_;
  std::condition_variable wake_;
  std::deque<std::pair<Request, std::packaged_task<Batch()>>> todo_;
  std::map<Request, std::shared_future<Batch>> pending_;
  bool stopping_ = false;
  std::vector<std::thread> threads_;
};

}  // namespace latentmoe::data
