#include "server/http_server.h"

#include <sys/socket.h>

#include <condition_variable>
#include <deque>
#include <mutex>
#include <vector>

#include <httplib.h>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "absl/time/clock.h"
#include "server/bearer_token.h"
#include "server/dashboard_api.h"
#include "server/dashboard_assets.h"
#include "server/prometheus_exporter.h"
#include "spdlog/spdlog.h"

namespace fp8d {
namespace {

constexpr time_t kReadTimeoutSeconds = 5;
constexpr time_t kWriteTimeoutSeconds = 10;
constexpr time_t kKeepAliveSeconds = 5;
constexpr size_t kKeepAliveRequests = 100;
constexpr char kPrometheusContentType[] = "text/plain; version=0.0.4; charset=utf-8";
constexpr char kJsonContentType[] = "application/json; charset=utf-8";

// httplib's ThreadPool queues without limit; this one serves on the caller's (accepting) thread
// once kHttpQueuedConnections wait, which bounds memory and slows accepting instead.
class BoundedThreadPool : public httplib::TaskQueue {
 public:
  BoundedThreadPool(size_t threads, size_t max_queued) : max_queued_(max_queued) {
    for (size_t i = 0; i < threads; ++i) workers_.emplace_back([this] { Work(); });
  }
  void enqueue(std::function<void()> fn) override {
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (queue_.size() < max_queued_) {
        queue_.push_back(std::move(fn));
        cv_.notify_one();
        return;
      }
    }
    fn();
  }
  void shutdown() override {
    {
      std::lock_guard<std::mutex> lock(mu_);
      stop_ = true;
    }
    cv_.notify_all();
    for (auto& t : workers_) t.join();
  }

 private:
  void Work() {
    while (true) {
      std::function<void()> fn;
      {
        std::unique_lock<std::mutex> lock(mu_);
        cv_.wait(lock, [&] { return stop_ || !queue_.empty(); });
        if (queue_.empty()) return;  // stopping, nothing left
        fn = std::move(queue_.front());
        queue_.pop_front();
      }
      fn();
    }
  }
  const size_t max_queued_;
  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<std::function<void()>> queue_;
  std::vector<std::thread> workers_;
  bool stop_ = false;
};

int HttpCode(const absl::Status& s) {
  switch (s.code()) {
    case absl::StatusCode::kInvalidArgument: return 400;
    case absl::StatusCode::kUnauthenticated: return 401;
    case absl::StatusCode::kPermissionDenied: return 403;
    case absl::StatusCode::kNotFound: return 404;
    case absl::StatusCode::kResourceExhausted: return 429;
    case absl::StatusCode::kUnavailable: return 503;
    default: return 500;
  }
}

void ReplyError(httplib::Response& res, const absl::Status& s) {
  res.status = HttpCode(s);
  res.set_content(absl::StrCat(absl::StatusCodeToString(s.code()), ": ", s.message(), "\n"),
                  "text/plain; charset=utf-8");
}

absl::StatusOr<int64_t> IntParam(const httplib::Request& req, const char* name,
                                 int64_t fallback) {
  if (!req.has_param(name)) return fallback;
  int64_t v = 0;
  if (!absl::SimpleAtoi(req.get_param_value(name), &v)) {
    return absl::InvalidArgumentError(absl::StrCat("query parameter `", name,
                                                   "` must be an integer"));
  }
  return v;
}

std::string CookieValue(const httplib::Request& req, absl::string_view name) {
  for (absl::string_view part : absl::StrSplit(req.get_header_value("Cookie"), ';')) {
    part = absl::StripAsciiWhitespace(part);
    if (absl::ConsumePrefix(&part, name) && absl::ConsumePrefix(&part, "=")) {
      return std::string(part);
    }
  }
  return "";
}

void ServeAsset(httplib::Response& res, const DashboardAsset& asset) {
  res.set_content(reinterpret_cast<const char*>(asset.data), asset.size, asset.content_type);
}

// The form the dashboard shows without the token; POST /login sets the cookie when it matches.
std::string LoginPage(bool failed) {
  return absl::StrCat(
      "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>fp8d</title>"
      "<link rel=\"icon\" href=\"/favicon.svg\"><link rel=\"stylesheet\" "
      "href=\"/dashboard.css\"></head><body><main class=\"login\"><h1>fp8d</h1>"
      "<p>This daemon needs its token (the contents of fp8d's --token-file).</p>",
      failed ? "<p class=\"error\">That token is not valid.</p>" : "",
      "<form method=\"post\" action=\"/login\"><input type=\"password\" name=\"token\" "
      "autocomplete=\"current-password\" autofocus> <button>Open the dashboard</button>"
      "</form></main></body></html>");
}

// Paths that answer without the token: a load balancer's probe, the login form and its icon.
bool IsPublic(const std::string& path) {
  return path == "/healthz" || path == "/login" || path == "/favicon.svg" ||
         path == "/dashboard.css";
}

}  // namespace

absl::StatusOr<std::unique_ptr<HttpServer>> HttpServer::Start(const HttpOptions& options,
                                                              JobRegistry* registry,
                                                              std::function<int()> open_streams) {
  auto server = std::unique_ptr<HttpServer>(new HttpServer());
  server->options_ = options;
  const std::string where = absl::StrCat("--http-listen ", options.host, ":", options.port);
  if (!options.tls_cert.empty()) {
    auto tls = std::make_unique<httplib::SSLServer>(options.tls_cert.c_str(),
                                                     options.tls_key.c_str());
    if (!tls->is_valid()) {
      return absl::FailedPreconditionError(absl::StrCat(
          where, ": cannot use --tls-cert `", options.tls_cert, "` / --tls-key `",
          options.tls_key, "` for HTTPS"));
    }
    server->server_ = std::move(tls);
  } else {
    server->server_ = std::make_unique<httplib::Server>();
  }
  httplib::Server& s = *server->server_;
  s.new_task_queue = [] { return new BoundedThreadPool(kHttpThreads, kHttpQueuedConnections); };
  // SO_REUSEADDR only: httplib's default SO_REUSEPORT would let a second daemon share the port.
  s.set_socket_options([](int sock) {
    int yes = 1;
    setsockopt(sock, SOL_SOCKET, SO_REUSEADDR, &yes, sizeof(yes));
  });
  s.set_read_timeout(kReadTimeoutSeconds);
  s.set_write_timeout(kWriteTimeoutSeconds);
  s.set_keep_alive_timeout(kKeepAliveSeconds);
  s.set_keep_alive_max_count(kKeepAliveRequests);
  s.set_payload_max_length(kHttpMaxBodyBytes);
  s.set_default_headers({{"X-Content-Type-Options", "nosniff"},
                         {"Content-Security-Policy", "default-src 'self'; frame-ancestors 'none'"},
                         {"Referrer-Policy", "no-referrer"},
                         {"Cache-Control", "no-store"}});
  server->Routes(registry, std::move(open_streams));
  if (!s.bind_to_port(options.host, options.port)) {
    return absl::FailedPreconditionError(
        absl::StrCat(where, ": cannot bind (in use, or not an address of this machine)"));
  }
  server->thread_ = std::thread([&s] { s.listen_after_bind(); });
  return server;
}

HttpServer::~HttpServer() { Stop(); }

void HttpServer::Stop() {
  if (server_) server_->stop();
  if (thread_.joinable()) thread_.join();
}

void HttpServer::Routes(JobRegistry* registry, std::function<int()> open_streams) {
  httplib::Server& s = *server_;
  exporter_ = std::make_unique<PrometheusExporter>(registry, open_streams);
  const absl::Time start = absl::Now();
  const std::string token = options_.token;
  const bool secure = !options_.tls_cert.empty();

  s.set_pre_routing_handler([token](const httplib::Request& req, httplib::Response& res) {
    if (token.empty() || IsPublic(req.path)) return httplib::Server::HandlerResponse::Unhandled;
    const std::string header = req.get_header_value("Authorization");
    if (!header.empty() ? CheckBearer(token, true, header).ok()
                        : TokensEqual(token, CookieValue(req, kHttpTokenCookie))) {
      return httplib::Server::HandlerResponse::Unhandled;
    }
    if (req.path == "/" && header.empty()) {
      res.status = 401;
      res.set_content(LoginPage(req.has_param("login")), "text/html; charset=utf-8");
    } else {
      ReplyError(res, absl::UnauthenticatedError(
                          "this fp8d requires `Authorization: Bearer <token>` (its --token-file)"));
    }
    res.set_header("WWW-Authenticate", "Bearer");
    return httplib::Server::HandlerResponse::Handled;
  });

  s.Post("/login", [token, secure](const httplib::Request& req, httplib::Response& res) {
    if (token.empty() || !TokensEqual(token, req.get_param_value("token"))) {
      res.status = 303;
      res.set_header("Location", "/?login=failed");
      return;
    }
    res.status = 303;
    res.set_header("Location", "/");
    res.set_header("Set-Cookie", absl::StrCat(kHttpTokenCookie, "=", token,
                                              "; Path=/; HttpOnly; SameSite=Strict",
                                              secure ? "; Secure" : ""));
  });

  s.Get("/healthz", [](const httplib::Request&, httplib::Response& res) {
    res.set_content("ok\n", "text/plain; charset=utf-8");
  });

  PrometheusExporter* exporter = exporter_.get();
  s.Get("/metrics", [exporter](const httplib::Request&, httplib::Response& res) {
    res.set_content(exporter->Scrape(), kPrometheusContentType);
  });

  for (const DashboardAsset& asset : DashboardAssets()) {
    const std::string path = asset.path == "/index.html" ? "/" : asset.path;
    s.Get(path, [&asset](const httplib::Request&, httplib::Response& res) {
      ServeAsset(res, asset);
    });
  }

  s.Get("/api/server", [registry, open_streams, start](const httplib::Request&,
                                                        httplib::Response& res) {
    res.set_content(ServerJson(*registry, open_streams ? open_streams() : 0, absl::Now() - start),
                    kJsonContentType);
  });
  s.Get("/api/jobs", [registry](const httplib::Request&, httplib::Response& res) {
    res.set_content(JobsJson(*registry), kJsonContentType);
  });
  s.Get(R"(/api/jobs/([^/]+)/metrics)", [registry](const httplib::Request& req,
                                                   httplib::Response& res) {
    auto cursor = IntParam(req, "cursor", 0);
    if (!cursor.ok()) return ReplyError(res, cursor.status());
    auto page = MetricPageJson(*registry, req.matches[1], *cursor);
    if (!page.ok()) return ReplyError(res, page.status());
    res.set_content(*page, kJsonContentType);
  });
  s.Get(R"(/api/jobs/([^/]+)/amax)", [registry](const httplib::Request& req,
                                                httplib::Response& res) {
    auto cursor = IntParam(req, "cursor", 0);
    if (!cursor.ok()) return ReplyError(res, cursor.status());
    auto every = IntParam(req, "every", 1);
    if (!every.ok()) return ReplyError(res, every.status());
    auto page = AmaxPageJson(*registry, req.matches[1], *cursor, *every);
    if (!page.ok()) return ReplyError(res, page.status());
    res.set_content(*page, kJsonContentType);
  });

  s.set_error_handler([](const httplib::Request& req, httplib::Response& res) {
    if (res.status == 404 && res.body.empty()) {
      ReplyError(res, absl::NotFoundError(absl::StrCat("no such page: ", req.path)));
    }
  });
  s.set_exception_handler([](const httplib::Request&, httplib::Response& res,
                             std::exception_ptr) {
    ReplyError(res, absl::InternalError("the request failed"));
  });
}

}  // namespace fp8d
