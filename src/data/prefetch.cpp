// Background batch preparation (see prefetch.h).
#include "latentmoe/data/prefetch.h"

namespace latentmoe::data {

BatchPrefetcher::BatchPrefetcher(const DataLoader& loader, int64_t workers) : loader_(loader) {
  try {
    for (int64_t i = 0; i < std::max<int64_t>(workers, 1); ++i) threads_.emplace_back([this] { work(); });
  } catch (...) {  // the destructor does not run for a half-made object: stop the threads started
    stop();
    throw;
  }
}

BatchPrefetcher::~BatchPrefetcher() { stop(); }

void BatchPrefetcher::stop() {
  {
    std::lock_guard lock(mutex_);
    stopping_ = true;
    todo_.clear();
  }
  wake_.notify_all();
  for (auto& t : threads_) {
    if (t.joinable()) t.join();
  }
}

void BatchPrefetcher::work() {
  while (true) {
    std::packaged_task<Batch()> task;
    {
      std::unique_lock lock(mutex_);
      wake_.wait(lock, [&] { return stopping_ || !todo_.empty(); });
      if (stopping_) return;
      task = std::move(todo_.front().second);
      todo_.pop_front();
    }
    task();  // the result (or the exception) goes to the future
  }
}

void BatchPrefetcher::prefetch(const std::vector<Request>& requests) {
  {
    std::lock_guard lock(mutex_);
    for (const Request& r : requests) {
      if (pending_.count(r)) continue;
      std::packaged_task<Batch()> task([this, r] { return loader_.rank_batch(r.first_sample, r.count, 0, 1); });
      pending_.emplace(r, task.get_future().share());
      todo_.emplace_back(r, std::move(task));
    }
  }
  wake_.notify_all();
}

Batch BatchPrefetcher::get(int64_t first_sample, int64_t count) {
  const Request wanted{first_sample, count};
  std::shared_future<Batch> ready;
  std::packaged_task<Batch()> not_started;
  {
    std::lock_guard lock(mutex_);
    const auto it = pending_.find(wanted);
    if (it != pending_.end()) {
      ready = it->second;
      pending_.erase(it);
      // Still waiting for a worker (e.g. behind the next step's batches): run it here instead.
      for (auto task = todo_.begin(); task != todo_.end(); ++task) {
        if (task->first == wanted) {
          not_started = std::move(task->second);
          todo_.erase(task);
          break;
        }
      }
    }
  }
  if (not_started.valid()) not_started();
  if (!ready.valid()) return loader_.rank_batch(first_sample, count, 0, 1);
  return ready.get();
}

int64_t BatchPrefetcher::queued() const {
  std::lock_guard lock(mutex_);
  return static_cast<int64_t>(pending_.size());
}

}  // namespace latentmoe::data
