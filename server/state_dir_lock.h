// One daemon per state dir: fp8d holds an exclusive flock on STATE/fp8d.lock for its lifetime and
// writes its pid there, so a second daemon on the same dir refuses to start (instead of loading
// and running the same jobs) and names the process that holds it. The kernel drops the lock when
// the holder dies, kill -9 included, so a stale file never blocks a restart.
#pragma once

#include <string>

#include "absl/status/statusor.h"

namespace fp8d {

inline constexpr char kStateLockFile[] = "fp8d.lock";

class StateDirLock {
 public:
  // FAILED_PRECONDITION naming the holder ("in use by fp8d (pid 1234)") when another process
  // holds the lock; the state dir must exist.
  static absl::StatusOr<StateDirLock> Acquire(const std::string& state_dir);
  StateDirLock(StateDirLock&& other) noexcept : fd_(other.fd_) { other.fd_ = -1; }
  StateDirLock& operator=(StateDirLock&&) = delete;
  StateDirLock(const StateDirLock&) = delete;
  ~StateDirLock();

 private:
  explicit StateDirLock(int fd) : fd_(fd) {}
  int fd_;
};

// "fp8d (pid 1234)" for a live process, from /proc; "pid 1234" when its name cannot be read.
std::string DescribeProcess(int pid);

}  // namespace fp8d
