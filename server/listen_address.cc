#include "server/listen_address.h"

#include <arpa/inet.h>

#include "absl/status/status.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/ascii.h"

namespace fp8d {

absl::StatusOr<ListenAddress> ParseListenAddress(const std::string& text) {
  const auto colon = text.rfind(':');
  if (colon == std::string::npos || colon == 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("--listen `", text, "` must be HOST:PORT, e.g. 127.0.0.1:7070"));
  }
  ListenAddress addr;
  addr.host = text.substr(0, colon);
  if (addr.host.size() >= 2 && addr.host.front() == '[' && addr.host.back() == ']') {
    addr.host = addr.host.substr(1, addr.host.size() - 2);
  }
  if (!absl::SimpleAtoi(text.substr(colon + 1), &addr.port) || addr.port < 1 ||
      addr.port > 65535) {
    return absl::InvalidArgumentError(
        absl::StrCat("--listen `", text, "`: port must be 1..65535"));
  }
  return addr;
}

bool IsLoopbackHost(const std::string& host) {
  if (absl::AsciiStrToLower(host) == "localhost") return true;
  in_addr v4{};
  if (inet_pton(AF_INET, host.c_str(), &v4) == 1) {
    return (ntohl(v4.s_addr) >> 24) == 127;
  }
  in6_addr v6{};
  if (inet_pton(AF_INET6, host.c_str(), &v6) == 1) {
    return IN6_IS_ADDR_LOOPBACK(&v6);
  }
  return false;
}

absl::StatusOr<ListenAddress> ParseHttpListenAddress(const std::string& text) {
  int port = 0;
  if (absl::SimpleAtoi(text, &port)) {
    if (port < 1 || port > 65535) {
      return absl::InvalidArgumentError(
          absl::StrCat("--http-listen `", text, "`: port must be 1..65535"));
    }
    return ListenAddress{"127.0.0.1", port};
  }
  auto addr = ParseListenAddress(text);
  if (!addr.ok()) {
    return absl::InvalidArgumentError(absl::StrCat(
        "--http-listen `", text, "` must be PORT or HOST:PORT, e.g. 127.0.0.1:7071"));
  }
  return addr;
}

absl::Status CheckListenAuthentication(const std::string& flag, const ListenAddress& address,
                                       bool has_token, bool verifies_client_certs) {
  if (IsLoopbackHost(address.host) || has_token || verifies_client_certs) {
    return absl::OkStatus();
  }
  return absl::InvalidArgumentError(absl::StrCat(
      "refusing to listen on ", address.host, ":", address.port, " (", flag,
      ") without authentication: ", address.host,
      " is not a loopback address; give --token-file (clients send the token on every call)",
      flag == "--listen" ? " or --tls-client-ca with --tls-cert/--tls-key (clients present a "
                           "certificate it signed); TLS alone does not authenticate clients"
                         : ""));
}

}  // namespace fp8d
