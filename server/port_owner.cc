#include "server/port_owner.h"

#include <dirent.h>
#include <unistd.h>

#include <cstdio>
#include <fstream>
#include <set>
#include <sstream>
#include <string>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"

namespace fp8d {
namespace {

constexpr char kTcpListen[] = "0A";  // TCP_LISTEN in /proc/net/tcp's `st` column

// Socket inodes of listeners on `port` in one /proc/net table.
void ListenerInodes(const std::string& table, int port, std::set<std::string>* inodes) {
  std::ifstream in(table);
  std::string line;
  std::getline(in, line);  // column titles
  while (std::getline(in, line)) {
    std::istringstream fields(line);
    std::string slot, local, remote, state, queues, timer, retransmits, uid, timeout, inode;
    if (!(fields >> slot >> local >> remote >> state >> queues >> timer >> retransmits >> uid >>
          timeout >> inode)) {
      continue;
    }
    const size_t colon = local.rfind(':');
    if (colon == std::string::npos || state != kTcpListen) continue;
    int local_port = 0;
    if (!absl::SimpleHexAtoi(local.substr(colon + 1), &local_port) || local_port != port) continue;
    inodes->insert(absl::StrCat("socket:[", inode, "]"));
  }
}

}  // namespace

std::optional<int> FindListeningProcess(int port) {
  std::set<std::string> inodes;
  ListenerInodes("/proc/net/tcp", port, &inodes);
  ListenerInodes("/proc/net/tcp6", port, &inodes);
  if (inodes.empty()) return std::nullopt;
  DIR* proc = ::opendir("/proc");
  if (proc == nullptr) return std::nullopt;
  std::optional<int> found;
  const int self = ::getpid();
  while (dirent* d = ::readdir(proc)) {
    int pid = 0;
    if (!absl::SimpleAtoi(d->d_name, &pid) || pid == self) continue;
    const std::string fd_dir = absl::StrCat("/proc/", pid, "/fd");
    DIR* fds = ::opendir(fd_dir.c_str());
    if (fds == nullptr) continue;
    while (dirent* f = ::readdir(fds)) {
      char target[64];
      const std::string link = absl::StrCat(fd_dir, "/", f->d_name);
      const ssize_t n = ::readlink(link.c_str(), target, sizeof(target) - 1);
      if (n <= 0) continue;
      target[n] = '\0';
      if (inodes.count(target)) {
        found = pid;
        break;
      }
    }
    ::closedir(fds);
    if (found) break;
  }
  ::closedir(proc);
  return found;
}

}  // namespace fp8d
