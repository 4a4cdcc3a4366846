// What --listen may be: host:port, and whether that host is loopback. The daemon refuses to
// listen beyond loopback without a token or TLS, so this check is security relevant.
#pragma once

#include <string>

#include "absl/status/statusor.h"

namespace fp8d {

struct ListenAddress {
  std::string host;  // without brackets for IPv6
  int port = 0;
};

// "127.0.0.1:7070", "localhost:7070", "[::1]:7070", "0.0.0.0:7070". INVALID_ARGUMENT naming
// --listen when the port is missing or outside 1..65535.
absl::StatusOr<ListenAddress> ParseListenAddress(const std::string& text);

// 127.0.0.0/8, ::1 and "localhost". Wildcards (0.0.0.0, ::) are not loopback.
bool IsLoopbackHost(const std::string& host);

// --http-listen: HOST:PORT as above, or a bare PORT on 127.0.0.1.
absl::StatusOr<ListenAddress> ParseHttpListenAddress(const std::string& text);

// The one rule for every listener (`flag` names it): beyond loopback only when clients prove
// who they are, with the token or with a certificate the listener verifies (TLS alone proves
// only the server). INVALID_ARGUMENT saying what to add otherwise.
absl::Status CheckListenAuthentication(const std::string& flag, const ListenAddress& address,
                                       bool has_token, bool verifies_client_certs);

}  // namespace fp8d
