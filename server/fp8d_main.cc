// fp8d: the training daemon. Owns the accelerator, runs one job at a time from a FIFO queue, and
// serves fp8d.v1.Trainer, grpc.health.v1 and server reflection.
//
//   fp8d --listen 127.0.0.1:7070 --state-dir DIR [--data-root DIR] [--token-file F]
//        [--tls-cert F --tls-key F [--tls-client-ca F]] [--engine auto|cpu|cuda]
//        [--max-queued N] [--stream-stall-timeout SECONDS] [--http-listen [HOST:]PORT]
//
// --http-listen also serves /metrics (Prometheus) and the live dashboard over HTTP (HTTPS with
// --tls-cert); beyond loopback only with a token.
// One daemon per port (no SO_REUSEPORT) and per state dir (STATE/fp8d.lock); files it creates
// are private to its user (umask 077).
//
// SIGTERM/SIGINT: the running job is stopped with a checkpoint (it resumes on the next start),
// streams end, and the process exits 0.
#include <signal.h>
#include <sys/stat.h>

#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <map>
#include <memory>
#include <optional>
#include <vector>
#include <sstream>
#include <string>

#include <grpcpp/ext/proto_server_reflection_plugin.h>
#include <grpcpp/grpcpp.h>
#include <grpcpp/health_check_service_interface.h>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/time/time.h"
#include "server/bearer_token.h"
#include "server/decode_error_interceptor.h"
#include "server/engine_factory.h"
#include "server/http_server.h"
#include "server/job_registry.h"
#include "server/listen_address.h"
#include "server/port_owner.h"
#include "server/state_dir_lock.h"
#include "server/trainer_service.h"
#include "spdlog/spdlog.h"

namespace {

constexpr int kExitUsage = 2;
constexpr int kExitStartup = 1;
// Largest request accepted (a job file's text is the biggest thing a client sends).
constexpr int kMaxRequestBytes = 8 * 1024 * 1024;
// How long in-flight calls get to finish on shutdown before they are cancelled.
constexpr auto kShutdownGrace = std::chrono::seconds(5);

constexpr char kUsage[] =
    "usage: fp8d --listen HOST:PORT --state-dir DIR [--data-root DIR] [--token-file F]\n"
    "            [--tls-cert F --tls-key F [--tls-client-ca F]] [--engine auto|cpu|cuda]\n"
    "            [--max-queued N] [--stream-stall-timeout SECONDS] [--http-listen [HOST:]PORT]\n"
    "Listening beyond loopback requires --token-file, or TLS that verifies client\n"
    "certificates (--tls-cert/--tls-key with --tls-client-ca).\n"
    "--http-listen serves /metrics and the dashboard (HOST defaults to 127.0.0.1).\n"
    "--data-root defaults to the current directory; job data paths must lie inside it.\n";

struct Flags {
  std::string listen = "127.0.0.1:7070";
  std::string state_dir;
  std::string data_root;
  std::string token_file;
  std::string tls_cert;
  std::string tls_key;
  std::string tls_client_ca;
  std::string engine = "auto";
  int max_queued = 64;
  std::string http_listen;  // empty: no HTTP listener
  int stall_timeout_s = 60;
};

bool ParseFlags(int argc, char** argv, Flags* f, std::string* error) {
  std::map<std::string, std::string*> strings = {
      {"--listen", &f->listen},     {"--state-dir", &f->state_dir}, {"--data-root", &f->data_root},
      {"--token-file", &f->token_file}, {"--tls-cert", &f->tls_cert}, {"--tls-key", &f->tls_key},
      {"--tls-client-ca", &f->tls_client_ca}, {"--engine", &f->engine},
      {"--http-listen", &f->http_listen}};
  for (int i = 1; i < argc; ++i) {
    std::string arg = argv[i];
    std::string value;
    bool has_value = false;
    if (auto eq = arg.find('='); eq != std::string::npos) {
      value = arg.substr(eq + 1);
      arg = arg.substr(0, eq);
      has_value = true;
    }
    if (arg == "--help" || arg == "-h") {
      *error = "";
      return false;
    }
    const bool known =
        strings.count(arg) || arg == "--max-queued" || arg == "--stream-stall-timeout";
    if (!known) {
      *error = absl::StrCat("unknown flag ", arg);
      return false;
    }
    if (!has_value) {
      if (i + 1 >= argc) {
        *error = absl::StrCat("flag ", arg, " needs a value");
        return false;
      }
      value = argv[++i];
    }
    if (arg == "--max-queued") {
      if (!absl::SimpleAtoi(value, &f->max_queued) || f->max_queued < 1) {
        *error = "--max-queued must be an integer >= 1";
        return false;
      }
    } else if (arg == "--stream-stall-timeout") {
      if (!absl::SimpleAtoi(value, &f->stall_timeout_s) || f->stall_timeout_s < 1 ||
          f->stall_timeout_s > 86400) {
        *error = "--stream-stall-timeout must be a number of seconds in 1..86400";
        return false;
      }
    } else {
      *strings[arg] = value;
    }
  }
  if (f->state_dir.empty()) {
    *error = "--state-dir is required";
    return false;
  }
  if (f->tls_cert.empty() != f->tls_key.empty()) {
    *error = "--tls-cert and --tls-key go together";
    return false;
  }
  if (!f->tls_client_ca.empty() && f->tls_cert.empty()) {
    *error = "--tls-client-ca needs --tls-cert and --tls-key";
    return false;
  }
  return true;
}

bool ReadFile(const std::string& path, std::string* out) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return false;
  std::stringstream ss;
  ss << in.rdbuf();
  *out = ss.str();
  return true;
}

}  // namespace

int main(int argc, char** argv) {
  // Block the stop signals in every thread; the main thread takes them with sigwait below.
  sigset_t stop_signals;
  sigemptyset(&stop_signals);
  sigaddset(&stop_signals, SIGTERM);
  sigaddset(&stop_signals, SIGINT);
  pthread_sigmask(SIG_BLOCK, &stop_signals, nullptr);
  // Job records, logs and checkpoints hold the user's specs and weights: private by default.
  ::umask(077);

  Flags flags;
  std::string error;
  if (!ParseFlags(argc, argv, &flags, &error)) {
    if (!error.empty()) std::fprintf(stderr, "fp8d: %s\n", error.c_str());
    std::fputs(kUsage, stderr);
    return error.empty() ? 0 : kExitUsage;
  }
  auto addr = fp8d::ParseListenAddress(flags.listen);
  if (!addr.ok()) {
    std::fprintf(stderr, "fp8d: %s\n", std::string(addr.status().message()).c_str());
    return kExitUsage;
  }
  const bool tls = !flags.tls_cert.empty();
  // TLS alone only proves the server to clients: anyone who trusts its certificate could
  // submit jobs. Beyond loopback a client must prove itself, by token or by certificate.
  const bool client_certs = tls && !flags.tls_client_ca.empty();
  if (absl::Status s = fp8d::CheckListenAuthentication("--listen", *addr,
                                                       !flags.token_file.empty(), client_certs);
      !s.ok()) {
    std::fprintf(stderr, "fp8d: %s\n", std::string(s.message()).c_str());
    return kExitUsage;
  }
  std::optional<fp8d::ListenAddress> http_addr;
  if (!flags.http_listen.empty()) {
    auto parsed = fp8d::ParseHttpListenAddress(flags.http_listen);
    absl::Status s = parsed.status();
    if (parsed.ok()) {
      // The HTTP listener verifies no client certificates: beyond loopback it needs the token.
      s = fp8d::CheckListenAuthentication("--http-listen", *parsed, !flags.token_file.empty(),
                                          /*verifies_client_certs=*/false);
    }
    if (!s.ok()) {
      std::fprintf(stderr, "fp8d: %s\n", std::string(s.message()).c_str());
      return kExitUsage;
    }
    http_addr = *parsed;
  }
  std::string token;
  if (!flags.token_file.empty()) {
    auto t = fp8d::ReadTokenFile(flags.token_file);
    if (!t.ok()) {
      std::fprintf(stderr, "fp8d: %s\n", std::string(t.status().message()).c_str());
      return kExitUsage;
    }
    token = *t;
  }
  if (flags.data_root.empty()) flags.data_root = std::filesystem::current_path().string();

  auto device = fp8d::ProbeDevice(flags.engine);
  if (!device.ok()) {
    std::fprintf(stderr, "fp8d: --engine %s: %s\n", flags.engine.c_str(),
                 device.status().ToString().c_str());
    return kExitStartup;
  }
  // One daemon per state dir: a second one would load and run the same jobs.
  std::error_code ec;
  std::filesystem::create_directories(flags.state_dir, ec);
  if (ec) {
    std::fprintf(stderr, "fp8d: --state-dir `%s` cannot be created: %s\n", flags.state_dir.c_str(),
                 ec.message().c_str());
    return kExitStartup;
  }
  auto lock = fp8d::StateDirLock::Acquire(flags.state_dir);
  if (!lock.ok()) {
    std::fprintf(stderr, "fp8d: %s\n", std::string(lock.status().message()).c_str());
    return kExitStartup;
  }
  fp8d::RegistryOptions options;
  options.state_dir = flags.state_dir;
  options.data_root = flags.data_root;
  options.engine_choice = flags.engine;
  options.max_queued_jobs = flags.max_queued;
  fp8d::JobRegistry registry(options, *device);
  if (absl::Status s = registry.Load(); !s.ok()) {
    std::fprintf(stderr, "fp8d: %s\n", s.ToString().c_str());
    return kExitStartup;
  }

  std::shared_ptr<grpc::ServerCredentials> creds;
  if (tls) {
    grpc::SslServerCredentialsOptions ssl;
    grpc::SslServerCredentialsOptions::PemKeyCertPair pair;
    if (!ReadFile(flags.tls_key, &pair.private_key) || !ReadFile(flags.tls_cert, &pair.cert_chain)) {
      std::fprintf(stderr, "fp8d: cannot read --tls-cert/--tls-key\n");
      return kExitUsage;
    }
    ssl.pem_key_cert_pairs.push_back(pair);
    if (client_certs) {
      if (!ReadFile(flags.tls_client_ca, &ssl.pem_root_certs)) {
        std::fprintf(stderr, "fp8d: cannot read --tls-client-ca `%s`\n",
                     flags.tls_client_ca.c_str());
        return kExitUsage;
      }
      ssl.client_certificate_request =
          GRPC_SSL_REQUEST_AND_REQUIRE_CLIENT_CERTIFICATE_AND_VERIFY;
    }
    creds = grpc::SslServerCredentials(ssl);
  } else {
    creds = grpc::InsecureServerCredentials();
  }

  fp8d::TrainerServiceOptions service_options;
  service_options.token = token;
  service_options.stall_timeout = absl::Seconds(flags.stall_timeout_s);
  fp8d::TrainerService service(&registry, service_options);
  grpc::EnableDefaultHealthCheckService(true);
  grpc::reflection::InitProtoReflectionServerBuilderPlugin();
  grpc::ServerBuilder builder;
  int port = 0;
  builder.AddListeningPort(flags.listen, creds, &port);
  builder.RegisterService(&service);
  builder.SetMaxReceiveMessageSize(kMaxRequestBytes);
  // gRPC sets SO_REUSEPORT by default, which lets a second daemon bind the same port and
  // clients reach either at random: one daemon per port.
  builder.AddChannelArgument(GRPC_ARG_ALLOW_REUSEPORT, 0);
  std::vector<std::unique_ptr<grpc::experimental::ServerInterceptorFactoryInterface>> interceptors;
  interceptors.push_back(std::make_unique<fp8d::DecodeErrorInterceptorFactory>());
  builder.experimental().SetInterceptorCreators(std::move(interceptors));
  std::unique_ptr<grpc::Server> server = builder.BuildAndStart();
  if (!server || port == 0) {
    const std::optional<int> owner = fp8d::FindListeningProcess(addr->port);
    std::fprintf(stderr, "fp8d: cannot listen on %s%s\n", flags.listen.c_str(),
                 owner ? absl::StrCat(": the port is in use by ", fp8d::DescribeProcess(*owner))
                             .c_str()
                       : "");
    return kExitStartup;
  }
  std::unique_ptr<fp8d::HttpServer> http;
  if (http_addr) {
    fp8d::HttpOptions http_options;
    http_options.host = http_addr->host;
    http_options.port = http_addr->port;
    http_options.token = token;
    http_options.tls_cert = flags.tls_cert;
    http_options.tls_key = flags.tls_key;
    auto started = fp8d::HttpServer::Start(http_options, &registry,
                                           [&service] { return service.open_streams(); });
    if (!started.ok()) {
      std::fprintf(stderr, "fp8d: %s\n", std::string(started.status().message()).c_str());
      server->Shutdown();
      return kExitStartup;
    }
    http = *std::move(started);
  }
  registry.Start();
  spdlog::info("fp8d listening on {}:{} (engine {}, device {}, auth {}, state {})", addr->host,
               port, device->engine, device->name,
               tls ? absl::StrCat(client_certs ? "tls+client-certs" : "tls",
                                  token.empty() ? "" : "+token")
                   : (token.empty() ? "none" : "token"),
               flags.state_dir);
  if (http_addr) {
    spdlog::info("dashboard and /metrics on {}://{}:{}/", tls ? "https" : "http",
                 http_addr->host.find(':') == std::string::npos ? http_addr->host
                                                                : "[" + http_addr->host + "]",
                 http_addr->port);
  }

  int signal_number = 0;
  sigwait(&stop_signals, &signal_number);
  spdlog::info("signal {}: checkpointing the running job and shutting down", signal_number);
  server->GetHealthCheckService()->SetServingStatus(false);
  if (http) http->Stop();
  registry.Shutdown();  // stops training with a checkpoint and ends every stream
  server->Shutdown(std::chrono::system_clock::now() + kShutdownGrace);
  server->Wait();
  spdlog::info("fp8d stopped");
  return 0;
}
