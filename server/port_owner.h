// Who listens on a TCP port: for the message of a daemon that cannot bind its --listen address,
// so the user learns which process to stop ("127.0.0.1:7070 is in use by fp8d (pid 1234)").
#pragma once

#include <optional>

namespace fp8d {

// The pid of a process with a socket listening on `port` (IPv4 or IPv6), found through
// /proc/net/tcp{,6} and /proc/PID/fd; nullopt when there is none or it is not visible to us.
std::optional<int> FindListeningProcess(int port);

}  // namespace fp8d
