// An exclusive, advisory lock on a directory for the lifetime of a run (checkpoint.dir,
// logging.dir), so two runs can never write into one directory. flock(2) on DIR/.latentmoe.lock:
// the kernel releases it when the holder exits in any way, so a crash leaves no stale lock (the
// file itself stays, harmless). No torch headers.
#pragma once

#include <string>

namespace latentmoe {

class DirectoryLock {
 public:
  // Creates dir if needed. Throws std::runtime_error naming `setting` and the directory: with the
  // holder (pid, host, start time, command) when another process holds the lock, or why the
  // directory cannot be created or written. Wait::yes blocks until the holder releases it instead
  // (one process prepares shared data while the others wait for it).
  enum class Wait { no, yes };
  DirectoryLock(const std::string& dir, const std::string& setting, Wait wait = Wait::no);
  ~DirectoryLock();
  DirectoryLock(const DirectoryLock&) = delete;
  DirectoryLock& operator=(const DirectoryLock&) = delete;

 private:
  std::string path_;
  int fd_ = -1;
};

}  // namespace latentmoe
