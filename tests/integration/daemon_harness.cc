#include "tests/integration/daemon_harness.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cctype>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>

extern char** environ;

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "gtest/gtest.h"

namespace fp8d::itest {
namespace fs = std::filesystem;

namespace {

std::atomic<int> g_dir_counter{0};

// Waits for `pid` until `deadline`; returns the exit code, 128+signal, or -1 on timeout.
int WaitPid(pid_t pid, absl::Time deadline) {
  while (true) {
    int status = 0;
    const pid_t r = waitpid(pid, &status, WNOHANG);
    if (r == pid) {
      if (WIFEXITED(status)) return WEXITSTATUS(status);
      if (WIFSIGNALED(status)) return 128 + WTERMSIG(status);
      return -1;
    }
    if (r < 0) return -1;
    if (absl::Now() >= deadline) return -1;
    absl::SleepFor(absl::Milliseconds(10));
  }
}

pid_t Spawn(const std::vector<std::string>& argv, const std::vector<std::string>& env,
            const std::string& out_path, const std::string& err_path) {
  // Everything the child needs is prepared before fork: after it, only exec-safe calls.
  std::vector<char*> args;
  for (const auto& a : argv) args.push_back(const_cast<char*>(a.c_str()));
  args.push_back(nullptr);
  std::vector<char*> envp;
  for (const auto& e : env) envp.push_back(const_cast<char*>(e.c_str()));  // first wins
  for (char** e = environ; *e != nullptr; ++e) envp.push_back(*e);
  envp.push_back(nullptr);
  const int out = open(out_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  const int err = err_path == out_path
                      ? out
                      : open(err_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  const int devnull = open("/dev/null", O_RDONLY | O_CLOEXEC);
  const pid_t pid = fork();
  if (pid == 0) {
    setpgid(0, 0);  // own process group, so a timeout kill reaches everything it started
    dup2(out, STDOUT_FILENO);
    dup2(err, STDERR_FILENO);
    dup2(devnull, STDIN_FILENO);
    execve(args[0], args.data(), envp.data());
    _exit(127);
  }
  close(out);
  if (err != out) close(err);
  close(devnull);
  return pid;
}

bool PortAcceptsConnections(int port) {
  const int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  addr.sin_port = htons(static_cast<uint16_t>(port));
  const bool ok = connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) == 0;
  close(fd);
  return ok;
}

}  // namespace

std::string BinaryPath(const char* name) {
  // A copy of the binaries elsewhere (the GPU bundle's bin/) takes precedence over the build's.
  if (const char* dir = std::getenv(kBinDirVariable); dir != nullptr && *dir != '\0') {
    return (fs::path(dir) / name).string();
  }
  if (std::string(name) == "fp8d") return FP8D_BIN;
  if (std::string(name) == "fp8ctl") return FP8CTL_BIN;
  return (fs::path(FP8D_BIN).parent_path() / name).string();
}

std::string MakeTempDir(const std::string& prefix) {
  const fs::path dir = fs::path(::testing::TempDir()) /
                       absl::StrCat("fp8d-it-", getpid(), "-", prefix, "-", g_dir_counter++);
  fs::remove_all(dir);
  fs::create_directories(dir);
  return dir.string();
}

void WriteFile(const std::string& path, const std::string& contents) {
  std::ofstream out(path, std::ios::binary);
  out << contents;
}

void WritePrivateFile(const std::string& path, const std::string& contents) {
  WriteFile(path, contents);
  fs::permissions(path, fs::perms::owner_read | fs::perms::owner_write, fs::perm_options::replace);
}

std::string ReadFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

int PickFreePort() {
  const int fd = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  addr.sin_port = 0;
  bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr));
  socklen_t len = sizeof(addr);
  getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len);
  close(fd);
  return ntohs(addr.sin_port);
}

std::string CorpusText(size_t bytes) {
  static const char* kWords[] = {
      "the", "model", "learns", "to", "predict", "the", "next", "byte", "of", "plain",
      "english", "text", "and", "its", "loss", "falls", "as", "training", "goes", "on",
      "while", "the", "daemon", "keeps", "every", "metric", "in", "a", "log", "so",
      "clients", "can", "follow", "it", "live", "or", "replay", "from", "any", "step"};
  constexpr int kWordCount = sizeof(kWords) / sizeof(kWords[0]);
  std::string text;
  uint64_t x = 88172645463325252ull;  // xorshift: the same text on every run
  int in_sentence = 0;
  while (text.size() < bytes) {
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    std::string word = kWords[x % kWordCount];
    if (in_sentence == 0) word[0] = static_cast<char>(word[0] - 'a' + 'A');
    text += word;
    if (++in_sentence >= 6 + static_cast<int>(x % 7)) {
      text += ".\n";
      in_sentence = 0;
    } else {
      text += ' ';
    }
  }
  return text;
}

std::string JobYaml(const JobFileOptions& o) {
  return absl::StrCat("name: ", o.name, "\n",
                      "model:\n  preset: tiny\n",
                      "data:\n  train: corpus.txt\n",
                      "steps: ", o.steps, "\n",
                      "batch_size: ", o.batch_size, "\n",
                      "seq_len: ", o.seq_len, "\n",
                      "checkpoint_interval: ", o.checkpoint_interval, "\n",
                      "log_interval: 1\n",
                      "recipe:\n  name: ", o.recipe, "\n",
                      "  policy:\n    min_gemm_dim: ", o.min_gemm_dim, "\n");
}

bool WaitFor(const std::function<bool()>& done, absl::Duration timeout) {
  const absl::Time deadline = absl::Now() + timeout;
  while (absl::Now() < deadline) {
    if (done()) return true;
    absl::SleepFor(absl::Milliseconds(20));
  }
  return done();
}

CommandResult RunProcess(const std::vector<std::string>& argv, absl::Duration timeout,
                         const std::vector<std::string>& env) {
  const std::string dir = MakeTempDir("proc");
  const std::string out_path = dir + "/out", err_path = dir + "/err";
  const pid_t pid = Spawn(argv, env, out_path, err_path);
  CommandResult result;
  result.exit_code = WaitPid(pid, absl::Now() + timeout);
  if (result.exit_code == -1) {
    kill(-pid, SIGKILL);
    WaitPid(pid, absl::Now() + absl::Seconds(10));
    ADD_FAILURE() << "timed out after " << timeout << ": " << argv[0];
  }
  result.out = ReadFile(out_path);
  result.err = ReadFile(err_path);
  fs::remove_all(dir);
  return result;
}

Daemon::Daemon(std::string state_dir, std::string data_root, std::vector<std::string> extra_args)
    : state_dir_(std::move(state_dir)),
      data_root_(std::move(data_root)),
      extra_args_(std::move(extra_args)) {}

Daemon::~Daemon() {
  if (pid_ > 0) {
    kill(pid_, SIGKILL);
    WaitPid(pid_, absl::Now() + absl::Seconds(10));
  }
}

std::string Daemon::address() const { return absl::StrCat("127.0.0.1:", port_); }

absl::Status Daemon::Start(const std::string& token, absl::Duration timeout) {
  port_ = PickFreePort();
  log_path_ = absl::StrCat(state_dir_, ".fp8d-", port_, ".log");
  std::vector<std::string> argv = {BinaryPath("fp8d"), "--listen", address(), "--state-dir",
                                   state_dir_, "--data-root", data_root_, "--engine", "cpu"};
  argv.insert(argv.end(), extra_args_.begin(), extra_args_.end());
  pid_ = Spawn(argv, env_, log_path_, log_path_);
  const absl::Time deadline = absl::Now() + timeout;
  while (absl::Now() < deadline) {
    int status = 0;
    if (waitpid(pid_, &status, WNOHANG) == pid_) {
      pid_ = -1;
      return absl::InternalError(absl::StrCat("fp8d exited during start:\n", log()));
    }
    // Probe the port first: a gRPC channel that failed to connect backs off for a second or more.
    if (PortAcceptsConnections(port_) && Client(token)->GetServerInfo().ok()) {
      return absl::OkStatus();
    }
    absl::SleepFor(absl::Milliseconds(20));
  }
  return absl::DeadlineExceededError(absl::StrCat("fp8d did not answer in time:\n", log()));
}

void Daemon::Kill9() {
  if (pid_ <= 0) return;
  kill(pid_, SIGKILL);
  WaitPid(pid_, absl::Now() + absl::Seconds(10));
  pid_ = -1;
}

int Daemon::Terminate(absl::Duration timeout) {
  if (pid_ <= 0) return -1;
  kill(pid_, SIGTERM);
  const int code = WaitPid(pid_, absl::Now() + timeout);
  if (code == -1) {
    kill(pid_, SIGKILL);
    WaitPid(pid_, absl::Now() + absl::Seconds(10));
  }
  pid_ = -1;
  return code;
}

std::unique_ptr<client::TrainerClient> Daemon::Client(const std::string& token) const {
  client::ClientOptions options;
  options.address = address();
  options.token = token;
  options.unary_timeout_ms = 20000;
  options.tls = !tls_ca_file_.empty();
  options.tls_ca_file = tls_ca_file_;
  return *client::TrainerClient::Connect(options);
}

CommandResult Daemon::Fp8ctl(const std::vector<std::string>& args, absl::Duration timeout,
                             const std::vector<std::string>& env) const {
  std::vector<std::string> argv = {BinaryPath("fp8ctl"), "--addr", address()};
  argv.insert(argv.end(), args.begin(), args.end());
  return RunProcess(argv, timeout, env);
}

DaemonFixture StartDaemonWithCorpus(const std::string& name, std::vector<std::string> extra) {
  DaemonFixture f;
  f.root = MakeTempDir(name);
  fs::create_directories(f.root + "/data");
  WriteFile(f.root + "/data/corpus.txt", CorpusText(200000));
  f.daemon = std::make_unique<Daemon>(f.root + "/state", f.root + "/data", std::move(extra));
  absl::Status s = f.daemon->Start();
  EXPECT_TRUE(s.ok()) << s;
  f.client = f.daemon->Client();
  return f;
}

bool WaitForJob(client::TrainerClient& client, const std::string& job,
                const std::function<bool(const fp8d::v1::Job&)>& done, absl::Duration timeout,
                fp8d::v1::Job* last) {
  fp8d::v1::Job seen;
  const bool ok = WaitFor(
      [&] {
        auto j = client.GetJob(job);
        if (!j.ok()) return false;
        seen = *j;
        return done(seen);
      },
      timeout);
  if (last) *last = seen;
  return ok;
}

JobThroughput ReadJobThroughput(client::TrainerClient& client, const std::string& job,
                                int64_t first_measured_step) {
  JobThroughput t;
  std::vector<double> step_ms;
  int64_t first_us = 0, last_us = 0, first_step = 0, last_step = 0;
  fp8d::v1::StreamMetricsRequest request;
  request.set_name(job);
  const absl::Status read = client.StreamMetrics(request, [&](const fp8d::v1::MetricRecord& r) {
    if (!r.has_step()) return true;
    ++t.step_records;
    if (r.step().fp8_layers() > 0) ++t.fp8_steps;
    if (r.step().step() < first_measured_step) return true;
    step_ms.push_back(r.step().step_time_ms());
    if (first_us == 0) {
      first_us = r.unix_micros();
      first_step = r.step().step();
    }
    last_us = r.unix_micros();
    last_step = r.step().step();
    return true;
  });
  EXPECT_TRUE(read.ok()) << job << ": reading the metric log: " << read;
  t.measured_steps = static_cast<int64_t>(step_ms.size());
  if (!step_ms.empty()) {
    std::sort(step_ms.begin(), step_ms.end());
    t.median_step_ms = step_ms[step_ms.size() / 2];
  }
  if (last_us > first_us) t.steps_per_sec = (last_step - first_step) / ((last_us - first_us) / 1e6);
  return t;
}

namespace {

bool HasNvidiaDevice() {
  std::error_code ec;
  if (std::filesystem::exists("/dev/nvidiactl", ec)) return true;
  for (const auto& entry : std::filesystem::directory_iterator("/dev", ec)) {
    const std::string name = entry.path().filename().string();
    if (name.size() > 6 && absl::StartsWith(name, "nvidia") &&
        std::isdigit(static_cast<unsigned char>(name[6]))) {
      return true;
    }
  }
  return false;
}

}  // namespace

CudaDaemonOnText StartCudaDaemonOnText(const std::string& name) {
  CudaDaemonOnText out;
  const char* text_path = std::getenv(kGpuTextVariable);
  if (text_path == nullptr || *text_path == '\0') {
    out.skip = absl::StrCat(kGpuTextVariable,
                            " is not set: point it at a few MB of English text "
                            "(deploy/gpu-bundle.sh builds bundle/data/text.txt and the bundle's "
                            "run-gpu-suite.sh exports it)");
    return out;
  }
  if (!std::filesystem::is_regular_file(text_path)) {
    out.skip = absl::StrCat(kGpuTextVariable, "=", text_path, ": no such file");
    return out;
  }
  if (!HasNvidiaDevice()) {
    out.skip = "no /dev/nvidiactl or /dev/nvidia<N>: this machine has no NVIDIA GPU, so "
               "fp8d --engine cuda cannot run";
    return out;
  }
  const std::filesystem::path text = std::filesystem::absolute(text_path);
  out.text_file = text.filename().string();
  out.root = MakeTempDir(name);
  // "--engine cuda" comes after the harness's "--engine cpu"; fp8d takes the last value.
  out.daemon = std::make_unique<Daemon>(out.root + "/state", text.parent_path().string(),
                                        std::vector<std::string>{"--engine", "cuda"});
  if (absl::Status started = out.daemon->Start(); !started.ok()) {
    const std::string log = out.daemon->log();
    if (absl::StrContains(log, "built without CUDA")) {
      out.skip = "this fp8d was built without CUDA, so --engine cuda cannot run: " + log;
    } else {
      out.status = absl::Status(started.code(),
                                absl::StrCat("fp8d --engine cuda did not start on a machine "
                                             "with an NVIDIA device: ", started.message()));
    }
    return out;
  }
  absl::StatusOr<fp8d::v1::ServerInfo> info = out.daemon->Client()->GetServerInfo();
  if (!info.ok()) {
    out.status = info.status();
  } else if (info->engine() != "cuda") {
    out.status = absl::FailedPreconditionError(
        absl::StrCat("fp8d runs the ", info->engine(), " engine, not cuda: ", out.daemon->log()));
  }
  return out;
}

ChildProcess::ChildProcess(const std::vector<std::string>& argv,
                           const std::vector<std::string>& env)
    : dir_(MakeTempDir("child")), output_path_(dir_ + "/output") {
  pid_ = Spawn(argv, env, output_path_, output_path_);
}

ChildProcess::~ChildProcess() {
  if (exit_code_ == -1 && pid_ > 0) {
    kill(-pid_, SIGKILL);
    WaitPid(pid_, absl::Now() + absl::Seconds(10));
  }
  fs::remove_all(dir_);
}

int ChildProcess::Wait(absl::Duration timeout) {
  if (exit_code_ == -1) exit_code_ = WaitPid(pid_, absl::Now() + timeout);
  return exit_code_;
}

void ChildProcess::Signal(int signal) {
  if (exit_code_ == -1) kill(pid_, signal);
}

bool ChildProcess::Catches(int signal) const {
  std::istringstream status(ReadFile(absl::StrCat("/proc/", pid_, "/status")));
  std::string line;
  while (std::getline(status, line)) {
    if (!absl::StartsWith(line, "SigCgt:")) continue;
    const uint64_t mask = std::stoull(line.substr(7), nullptr, 16);
    return (mask >> (signal - 1)) & 1;
  }
  return false;
}

}  // namespace fp8d::itest
