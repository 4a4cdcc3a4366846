// fp8d's HTTP listener (--http-listen): /metrics for Prometheus, the live dashboard at / with its
// JSON API (server/dashboard_api.h), and /healthz. Plain HTTP or, with the daemon's
// --tls-cert/--tls-key, HTTPS. With a token, every path but /healthz, /login and the icon needs it:
// `Authorization: Bearer <token>` (Prometheus' `authorization` scrape setting) or the HttpOnly
// cookie that the dashboard's login form sets after checking the token.
//
// Bounded: kHttpThreads worker threads and kHttpQueuedConnections waiting connections (beyond
// that the accepting thread serves the connection itself, so a flood slows accepting instead of
// growing memory), request bodies up to kHttpMaxBodyBytes, read timeouts, keep-alive limits.
#pragma once

#include <functional>
#include <memory>
#include <string>
#include <thread>

#include "absl/status/statusor.h"

namespace httplib {
class Server;
}

namespace fp8d {

class JobRegistry;
class PrometheusExporter;

inline constexpr int kHttpThreads = 4;
inline constexpr size_t kHttpQueuedConnections = 64;
inline constexpr size_t kHttpMaxBodyBytes = 16 * 1024;
inline constexpr char kHttpTokenCookie[] = "fp8d_token";

struct HttpOptions {
  std::string host;       // as ParseListenAddress returns it (no brackets)
  int port = 0;
  std::string token;      // empty: no authentication (loopback only; fp8d_main enforces that)
  std::string tls_cert;   // PEM files; both or neither
  std::string tls_key;
};

class HttpServer {
 public:
  // Binds and starts serving on a thread. FAILED_PRECONDITION naming --http-listen when the
  // address cannot be bound or the TLS files are unusable.
  static absl::StatusOr<std::unique_ptr<HttpServer>> Start(const HttpOptions& options,
                                                           JobRegistry* registry,
                                                           std::function<int()> open_streams);
  ~HttpServer();
  // Stops accepting and joins the serving thread. Idempotent.
  void Stop();

 private:
  HttpServer() = default;
  void Routes(JobRegistry* registry, std::function<int()> open_streams);

  HttpOptions options_;
  std::unique_ptr<httplib::Server> server_;
  std::unique_ptr<PrometheusExporter> exporter_;
  std::thread thread_;
};

}  // namespace fp8d
