// flock-based directory locks with the holder's identity written into the lock file.
#include "latentmoe/util/directory_lock.h"
#include "latentmoe/util/host.h"

#include <fcntl.h>
#include <fmt/format.h>
#include <sys/file.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <stdexcept>

namespace latentmoe {

namespace {
std::string holder_description() {
  std::string command;
  std::ifstream cmdline("/proc/self/cmdline", std::ios::binary);
  for (std::string arg; std::getline(cmdline, arg, '\0');) command += (command.empty() ? "" : " ") + arg;
  return fmt::format("pid {} on host {}, started {}: {}", ::getpid(), host_name(), utc_now_iso8601(), command);
}
}  // namespace

DirectoryLock::DirectoryLock(const std::string& dir, const std::string& setting, Wait wait) {
  namespace fs = std::filesystem;
  std::error_code ec;
  fs::create_directories(dir, ec);
  if (ec) throw std::runtime_error(fmt::format("{} {}: cannot create the directory: {}", setting, dir, ec.message()));
  path_ = (fs::path(dir) / ".latentmoe.lock").string();
  fd_ = ::open(path_.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
  if (fd_ < 0) {
    throw std::runtime_error(fmt::format("{} {}: cannot write there ({}: {}); choose a writable directory", setting, dir,
                                         path_, std::strerror(errno)));
  }
  if (::flock(fd_, wait == Wait::yes ? LOCK_EX : LOCK_EX | LOCK_NB) != 0) {
    const int err = errno;
    std::stringstream holder;
    holder << std::ifstream(path_).rdbuf();
    ::close(fd_);
    fd_ = -1;
    if (err != EWOULDBLOCK) {
      throw std::runtime_error(fmt::format("{} {}: cannot lock {}: {}", setting, dir, path_, std::strerror(err)));
    }
    const std::string who = holder.str().empty() ? "another process (it has not written its name yet)" : holder.str();
    throw std::runtime_error(fmt::format("{} {} is in use by another run: {}. Two runs must not share it (their "
                                         "checkpoints or metrics would mix): wait for that run to end, or give this one "
                                         "another {}. The lock is released whenever its holder exits, even by a crash; "
                                         "if no such process exists, the directory is on a file system without flock "
                                         "support",
                                         setting, dir, who, setting));
  }
  const std::string me = holder_description();
  if (::ftruncate(fd_, 0) != 0 || ::pwrite(fd_, me.data(), me.size(), 0) != static_cast<ssize_t>(me.size())) {
    ::close(fd_);
    throw std::runtime_error(fmt::format("{} {}: cannot write {}: {}", setting, dir, path_, std::strerror(errno)));
  }
}

DirectoryLock::~DirectoryLock() {
  if (fd_ >= 0) ::close(fd_);  // releases the flock; the file stays (removing it would race a new holder)
}

}  // namespace latentmoe
