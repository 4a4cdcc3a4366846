#include "server/state_dir_lock.h"

#include <fcntl.h>
#include <sys/file.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>

#include "absl/strings/ascii.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"

namespace fp8d {

std::string DescribeProcess(int pid) {
  std::ifstream comm(absl::StrCat("/proc/", pid, "/comm"));
  std::string name;
  if (comm && std::getline(comm, name) && !name.empty()) {
    return absl::StrCat(absl::StripAsciiWhitespace(name), " (pid ", pid, ")");
  }
  return absl::StrCat("pid ", pid);
}

absl::StatusOr<StateDirLock> StateDirLock::Acquire(const std::string& state_dir) {
  const std::string path = (std::filesystem::path(state_dir) / kStateLockFile).string();
  const int fd = ::open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0600);
  if (fd < 0) {
    return absl::FailedPreconditionError(
        absl::StrCat("cannot open the state dir lock `", path, "`: ", std::strerror(errno)));
  }
  if (::flock(fd, LOCK_EX | LOCK_NB) != 0) {
    const int err = errno;
    char buf[32] = {};
    const ssize_t n = ::pread(fd, buf, sizeof(buf) - 1, 0);
    ::close(fd);
    int pid = 0;
    const bool known = n > 0 && absl::SimpleAtoi(absl::StripAsciiWhitespace(buf), &pid) && pid > 0;
    if (err == EWOULDBLOCK) {
      return absl::FailedPreconditionError(absl::StrCat(
          "--state-dir `", state_dir, "` is in use by ",
          known ? DescribeProcess(pid) : std::string("another process"), " (it holds `", path,
          "`): one daemon per state dir"));
    }
    return absl::FailedPreconditionError(
        absl::StrCat("cannot lock `", path, "`: ", std::strerror(err)));
  }
  const std::string pid = absl::StrCat(::getpid(), "\n");
  if (::ftruncate(fd, 0) != 0 || ::pwrite(fd, pid.data(), pid.size(), 0) < 0) {
    ::close(fd);
    return absl::FailedPreconditionError(
        absl::StrCat("cannot write the state dir lock `", path, "`: ", std::strerror(errno)));
  }
  return StateDirLock(fd);
}

StateDirLock::~StateDirLock() {
  if (fd_ >= 0) ::close(fd_);  // releases the flock
}

}  // namespace fp8d
