// fp8d --http-listen: the same authentication rules as the gRPC listener. With a token every
// page but /healthz needs it (a bearer header for Prometheus, the login form's cookie for
// browsers); beyond loopback without a token or TLS the daemon refuses to start; HTTPS with the
// daemon's certificate. Also the JSON API's answers to bad requests.
#include <filesystem>
#include <regex>

#include <httplib.h>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"
#include "tests/integration/daemon_harness.h"

namespace fp8d::itest {
namespace {

constexpr char kToken[] = "http-token-0123456789abcdef";

struct HttpDaemon {
  std::string root;
  int http_port = 0;
  std::unique_ptr<Daemon> daemon;
};

HttpDaemon StartHttpDaemon(const std::string& name, std::vector<std::string> extra = {}) {
  HttpDaemon d;
  d.root = MakeTempDir(name);
  std::filesystem::create_directories(d.root + "/data");
  WriteFile(d.root + "/data/corpus.txt", CorpusText(50000));
  d.http_port = PickFreePort();
  extra.push_back("--http-listen");
  extra.push_back(absl::StrCat("127.0.0.1:", d.http_port));
  d.daemon = std::make_unique<Daemon>(d.root + "/state", d.root + "/data", extra);
  return d;
}

TEST(HttpListener, TokenGuardsMetricsApiAndDashboardButNotHealth) {
  const std::string token_file = MakeTempDir("http-token-file") + "/token";
  WritePrivateFile(token_file, std::string(kToken) + "\n");
  HttpDaemon d = StartHttpDaemon("http-token", {"--token-file", token_file});
  ASSERT_TRUE(d.daemon->Start(kToken).ok()) << d.daemon->log();
  httplib::Client http("127.0.0.1", d.http_port);

  auto health = http.Get("/healthz");
  ASSERT_TRUE(health);
  EXPECT_EQ(health->status, 200);

  auto anonymous = http.Get("/metrics");
  ASSERT_TRUE(anonymous);
  EXPECT_EQ(anonymous->status, 401);
  EXPECT_FALSE(absl::StrContains(anonymous->body, "fp8d_uptime_seconds"));
  auto wrong = http.Get("/metrics", {{"Authorization", "Bearer wrong-token-0123456789abcd"}});
  ASSERT_TRUE(wrong);
  EXPECT_EQ(wrong->status, 401);
  auto scrape = http.Get("/metrics", {{"Authorization", std::string("Bearer ") + kToken}});
  ASSERT_TRUE(scrape);
  EXPECT_EQ(scrape->status, 200);
  EXPECT_TRUE(absl::StrContains(scrape->body, "\nfp8d_uptime_seconds ")) << scrape->body;
  EXPECT_TRUE(absl::StartsWith(scrape->get_header_value("Content-Type"),
                               "text/plain; version=0.0.4"));

  // The browser: a login form, then the cookie it sets opens the dashboard and its API.
  auto page = http.Get("/");
  ASSERT_TRUE(page);
  EXPECT_EQ(page->status, 401);
  EXPECT_TRUE(absl::StrContains(page->body, "action=\"/login\"")) << page->body;
  EXPECT_FALSE(absl::StrContains(page->body, "dashboard.js"));
  EXPECT_EQ(http.Get("/api/jobs")->status, 401);
  auto refused = http.Post("/login", "token=not-the-token", "application/x-www-form-urlencoded");
  ASSERT_TRUE(refused);
  EXPECT_EQ(refused->status, 303);
  EXPECT_EQ(refused->get_header_value("Location"), "/?login=failed");
  EXPECT_FALSE(refused->has_header("Set-Cookie"));
  auto login = http.Post("/login", std::string("token=") + kToken,
                         "application/x-www-form-urlencoded");
  ASSERT_TRUE(login);
  EXPECT_EQ(login->status, 303);
  const std::string cookie = login->get_header_value("Set-Cookie");
  EXPECT_TRUE(absl::StrContains(cookie, "HttpOnly")) << cookie;
  EXPECT_TRUE(absl::StrContains(cookie, "SameSite=Strict")) << cookie;
  const std::string pair = cookie.substr(0, cookie.find(';'));
  auto dashboard = http.Get("/", {{"Cookie", pair}});
  ASSERT_TRUE(dashboard);
  EXPECT_EQ(dashboard->status, 200);
  EXPECT_TRUE(absl::StrContains(dashboard->body, "/dashboard.js")) << dashboard->body;
  EXPECT_EQ(dashboard->get_header_value("Content-Security-Policy"),
            "default-src 'self'; frame-ancestors 'none'");
  auto jobs = http.Get("/api/jobs", {{"Cookie", pair}});
  ASSERT_TRUE(jobs);
  EXPECT_EQ(jobs->status, 200);
  EXPECT_EQ(jobs->body, "{\"jobs\":[]}");
}

TEST(HttpListener, ApiAnswersBadRequestsWithTheirStatus) {
  HttpDaemon d = StartHttpDaemon("http-api");
  ASSERT_TRUE(d.daemon->Start().ok()) << d.daemon->log();
  httplib::Client http("127.0.0.1", d.http_port);
  EXPECT_EQ(http.Get("/api/jobs/nope-1/metrics")->status, 404);
  auto bad_id = http.Get("/api/jobs/bad%20id/metrics");
  EXPECT_EQ(bad_id->status, 400);
  EXPECT_TRUE(absl::StrContains(bad_id->body, "is not a job id")) << bad_id->body;
  auto client = d.daemon->Client();
  auto job = client->SubmitJobText(JobYaml({}), {"steps=2"});
  ASSERT_TRUE(job.ok()) << job.status();
  const std::string id = job->name().substr(5);
  auto bad_cursor = http.Get("/api/jobs/" + id + "/metrics?cursor=abc");
  EXPECT_EQ(bad_cursor->status, 400);
  EXPECT_TRUE(absl::StrContains(bad_cursor->body, "cursor")) << bad_cursor->body;
  EXPECT_EQ(http.Get("/api/jobs/" + id + "/amax?every=0")->status, 400);
  EXPECT_EQ(http.Get("/api/jobs/" + id + "/metrics?cursor=-5")->status, 400);
  auto page = http.Get("/api/jobs/" + id + "/metrics?cursor=0");
  ASSERT_EQ(page->status, 200);
  EXPECT_TRUE(absl::StartsWith(page->body, "{\"cursor\":")) << page->body;
  EXPECT_EQ(http.Get("/no/such/page")->status, 404);
  EXPECT_EQ(http.Get("/dashboard.js")->get_header_value("Content-Type"),
            "text/javascript; charset=utf-8");
}

// The dashboard polls with the cursor of its previous answer: while the job trains, each page
// holds exactly the records logged since, so the page extends its curves without gaps or repeats.
TEST(HttpListener, ApiPagesContinueFromTheirCursorWhileTheJobTrains) {
  HttpDaemon d = StartHttpDaemon("http-pages");
  ASSERT_TRUE(d.daemon->Start().ok()) << d.daemon->log();
  JobFileOptions options;
  options.recipe = "delayed";
  auto client = d.daemon->Client();
  auto job = client->SubmitJobText(JobYaml(options), {"steps=100000"});
  ASSERT_TRUE(job.ok()) << job.status();
  const std::string api = "/api/jobs/" + job->name().substr(5);
  httplib::Client http("127.0.0.1", d.http_port);
  // Step numbers in a page: "steps":[[1,...],[2,...]] and "records":[{"step":1,...
  const auto steps_of = [](const std::string& body, const std::string& list,
                           const std::string& pattern) {
    std::vector<int64_t> steps;
    const std::string part = body.substr(body.find("\"" + list + "\":"));
    const std::regex re(pattern);
    for (auto it = std::sregex_iterator(part.begin(), part.end(), re); it != std::sregex_iterator();
         ++it) {
      steps.push_back(std::stoll((*it)[1]));
    }
    return steps;
  };
  const auto cursor_of = [](const std::string& body) {
    std::smatch m;
    EXPECT_TRUE(std::regex_search(body, m, std::regex("\"cursor\":([0-9]+)"))) << body;
    return std::stoll(m[1]);
  };
  int64_t metric_cursor = 0, amax_cursor = 0, next_step = 1, next_amax = 2;
  for (int page = 0; page < 3; ++page) {
    const int64_t want = next_step + 2;
    ASSERT_TRUE(WaitForJob(*client, job->name(),
                           [&](const fp8d::v1::Job& j) { return j.step() >= want; },
                           absl::Seconds(120)));
    auto metrics = http.Get(absl::StrCat(api, "/metrics?cursor=", metric_cursor));
    ASSERT_EQ(metrics->status, 200) << metrics->body;
    const auto steps = steps_of(metrics->body, "steps", "\\[([0-9]+),");
    ASSERT_FALSE(steps.empty()) << metrics->body;
    for (int64_t s : steps) EXPECT_EQ(s, next_step++) << "page " << page;
    metric_cursor = cursor_of(metrics->body);
    // Amax of even steps only (every=2), from where the previous page ended.
    auto amax = http.Get(absl::StrCat(api, "/amax?every=2&cursor=", amax_cursor));
    ASSERT_EQ(amax->status, 200) << amax->body;
    for (int64_t s : steps_of(amax->body, "records", "\"step\":([0-9]+)")) {
      EXPECT_EQ(s, next_amax) << "page " << page;
      next_amax += 2;
    }
    amax_cursor = cursor_of(amax->body);
  }
  EXPECT_GT(next_amax, 2);
  ASSERT_TRUE(client->CancelJob(job->name()).ok());
}

TEST(HttpListener, RefusesToListenBeyondLoopbackWithoutTokenOrTls) {
  const std::string root = MakeTempDir("http-nonloopback");
  const std::string addr = absl::StrCat("0.0.0.0:", PickFreePort());
  auto refused = RunProcess({BinaryPath("fp8d"), "--listen",
                             absl::StrCat("127.0.0.1:", PickFreePort()), "--http-listen", addr,
                             "--state-dir", root + "/state", "--engine", "cpu"},
                            absl::Seconds(20));
  EXPECT_EQ(refused.exit_code, 2);
  EXPECT_TRUE(absl::StrContains(refused.err, "refusing to listen on " + addr +
                                                 " (--http-listen) without authentication"))
      << refused.err;
  auto bad = RunProcess({BinaryPath("fp8d"), "--http-listen", "nowhere", "--state-dir",
                         root + "/state", "--engine", "cpu"},
                        absl::Seconds(20));
  EXPECT_EQ(bad.exit_code, 2);
  EXPECT_TRUE(absl::StrContains(bad.err, "--http-listen `nowhere` must be PORT or HOST:PORT"))
      << bad.err;
  // A port another listener holds is an error at startup, not a silent daemon without HTTP.
  HttpDaemon first = StartHttpDaemon("http-first");
  ASSERT_TRUE(first.daemon->Start().ok());
  auto taken = RunProcess({BinaryPath("fp8d"), "--listen",
                           absl::StrCat("127.0.0.1:", PickFreePort()),
                           "--http-listen", absl::StrCat("127.0.0.1:", first.http_port),
                           "--state-dir", root + "/state2", "--engine", "cpu"},
                          absl::Seconds(20));
  EXPECT_EQ(taken.exit_code, 1);
  EXPECT_TRUE(absl::StrContains(taken.err, "cannot bind")) << taken.err;
}

TEST(HttpListener, ServesHttpsWithTheDaemonsCertificate) {
  constexpr char kOpenssl[] = "/usr/bin/openssl";
  if (!std::filesystem::exists(kOpenssl)) {
    GTEST_SKIP() << "needs " << kOpenssl << " to make a certificate";
  }
  HttpDaemon d = StartHttpDaemon("http-tls");
  auto cert = RunProcess({kOpenssl, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
                          "-subj", "/CN=localhost", "-addext", "subjectAltName=IP:127.0.0.1",
                          "-keyout", d.root + "/key.pem", "-out", d.root + "/cert.pem"},
                         absl::Seconds(60));
  ASSERT_EQ(cert.exit_code, 0) << cert.err;
  d.daemon = std::make_unique<Daemon>(
      d.root + "/state", d.root + "/data",
      std::vector<std::string>{"--tls-cert", d.root + "/cert.pem", "--tls-key",
                               d.root + "/key.pem", "--http-listen",
                               absl::StrCat("127.0.0.1:", d.http_port)});
  d.daemon->UseTls(d.root + "/cert.pem");
  ASSERT_TRUE(d.daemon->Start().ok()) << d.daemon->log();
  httplib::SSLClient https("127.0.0.1", d.http_port);
  https.set_ca_cert_path((d.root + "/cert.pem").c_str());
  https.enable_server_certificate_verification(true);
  auto scrape = https.Get("/metrics");
  ASSERT_TRUE(scrape) << httplib::to_string(scrape.error());
  EXPECT_EQ(scrape->status, 200);
  EXPECT_TRUE(absl::StrContains(scrape->body, "fp8d_uptime_seconds"));
  httplib::Client plain("127.0.0.1", d.http_port);
  auto refused = plain.Get("/metrics");
  EXPECT_TRUE(!refused || refused->status != 200) << "plain HTTP on the HTTPS port";
}

}  // namespace
}  // namespace fp8d::itest
