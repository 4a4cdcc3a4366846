// Test harness for the control plane: starts the real fp8d binary on a free loopback port with a
// temp state dir, runs fp8ctl, and gives every wait a time limit. Children are killed and reaped
// by the destructors, so a failing test never leaves a daemon behind.
#pragma once

#include <sys/types.h>

#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/time/time.h"
#include "client/fp8d_client.h"

namespace fp8d::itest {

// A fresh directory under the test temp dir.
std::string MakeTempDir(const std::string& prefix);
void WriteFile(const std::string& path, const std::string& contents);
// Readable by its owner only (0600), as fp8d requires of a token file.
void WritePrivateFile(const std::string& path, const std::string& contents);
std::string ReadFile(const std::string& path);
// A port nothing listens on right now (bound to 127.0.0.1:0, then released).
int PickFreePort();

// Deterministic English-like text for the byte-level tokenizer.
std::string CorpusText(size_t bytes);

// A job file for the `tiny` preset on `corpus.txt` in the data root.
struct JobFileOptions {
  std::string name = "it";
  int steps = 40;
  std::string recipe = "bf16";
  // recipe.policy.min_gemm_dim. The tiny preset's layers are smaller than any measured automatic
  // threshold (core/fp8_gemm_threshold.h) would allow, so these jobs say explicitly that an FP8
  // recipe runs every layer but the LM head in FP8 (16: the smallest size FP8 GEMMs take);
  // `fp8ctl recipe set` carries the policy over. 0 = the automatic threshold.
  int min_gemm_dim = 16;
  int batch_size = 4;
  int seq_len = 64;
  int checkpoint_interval = 0;
};
std::string JobYaml(const JobFileOptions& options);

// Polls `done` every 20 ms until it returns true or `timeout` passes.
bool WaitFor(const std::function<bool()>& done, absl::Duration timeout);

struct CommandResult {
  int exit_code = -1;
  std::string out;
  std::string err;
};
// Runs `argv` (no shell) with `env` additions, stdout and stderr captured; killed after `timeout`.
CommandResult RunProcess(const std::vector<std::string>& argv, absl::Duration timeout,
                         const std::vector<std::string>& env = {});

class Daemon {
 public:
  // `extra_args` are appended to fp8d's command line (--token-file, --max-queued...).
  Daemon(std::string state_dir, std::string data_root, std::vector<std::string> extra_args = {});
  ~Daemon();

  // Starts fp8d on a new free port and waits until GetServerInfo answers.
  absl::Status Start(const std::string& token = "", absl::Duration timeout = absl::Seconds(30));
  void Kill9();
  // SIGTERM; the exit code, or -1 when it did not exit within `timeout` (then it is killed).
  int Terminate(absl::Duration timeout = absl::Seconds(30));
  bool running() const { return pid_ > 0; }
  // NAME=VALUE entries added to the daemon's environment from the next Start on.
  void SetEnv(std::vector<std::string> env) { env_ = std::move(env); }
  pid_t pid() const { return pid_; }
  // Clients (and the readiness probe) connect with TLS, trusting `ca_file`.
  void UseTls(const std::string& ca_file) { tls_ca_file_ = ca_file; }

  std::string address() const;
  std::string log() const { return ReadFile(log_path_); }
  std::unique_ptr<client::TrainerClient> Client(const std::string& token = "") const;
  // fp8ctl --addr <this daemon> ARGS...
  CommandResult Fp8ctl(const std::vector<std::string>& args,
                       absl::Duration timeout = absl::Seconds(60),
                       const std::vector<std::string>& env = {}) const;

  const std::string& state_dir() const { return state_dir_; }
  const std::string& data_root() const { return data_root_; }

 private:
  std::string state_dir_;
  std::string data_root_;
  std::vector<std::string> extra_args_;
  std::vector<std::string> env_;
  std::string log_path_;
  std::string tls_ca_file_;
  int port_ = 0;
  pid_t pid_ = -1;
};

// A started daemon with a corpus in its data root, for tests that need no special flags.
struct DaemonFixture {
  std::string root;
  std::unique_ptr<Daemon> daemon;
  std::unique_ptr<client::TrainerClient> client;
};
DaemonFixture StartDaemonWithCorpus(const std::string& name, std::vector<std::string> extra = {});

// Waits until `job` is in `state` (by name, e.g. "RUNNING") and returns the last Job seen.
bool WaitForJob(client::TrainerClient& client, const std::string& job,
                const std::function<bool(const fp8d::v1::Job&)>& done, absl::Duration timeout,
                fp8d::v1::Job* last = nullptr);

// The training rate of a finished job, read back from its metric log. The rate counts only
// steps >= first_measured_step (the first steps of a job are slower: plan choices, first-touch
// allocations); the record counts cover every step.
struct JobThroughput {
  int64_t step_records = 0;
  int64_t fp8_steps = 0;       // step records that report FP8 layers
  int64_t measured_steps = 0;
  double steps_per_sec = 0;    // wall clock between the first and last measured step records
  double median_step_ms = 0;   // the engine's step time over the measured steps
};
JobThroughput ReadJobThroughput(client::TrainerClient& client, const std::string& job,
                                int64_t first_measured_step);

// `fp8d --engine cuda` with the folder of the text file FP8D_PARITY_TEXT names as its data root,
// for the GPU daemon tests. `skip` says why the test cannot run on this machine (no text, no
// NVIDIA device, an fp8d built without CUDA) and is empty otherwise; `status` is an error when
// the daemon should have started on the GPU and did not.
inline constexpr char kGpuTextVariable[] = "FP8D_PARITY_TEXT";
struct CudaDaemonOnText {
  std::string root;
  std::unique_ptr<Daemon> daemon;
  std::string text_file;  // the text's file name inside the data root
  std::string skip;
  absl::Status status;
};
CudaDaemonOnText StartCudaDaemonOnText(const std::string& name);

// A program running in the background (its own process group), stdout and stderr into one file
// that can be read while it runs; killed with its group when destroyed.
class ChildProcess {
 public:
  explicit ChildProcess(const std::vector<std::string>& argv,
                        const std::vector<std::string>& env = {});
  ~ChildProcess();
  ChildProcess(const ChildProcess&) = delete;
  ChildProcess& operator=(const ChildProcess&) = delete;

  pid_t pid() const { return pid_; }
  // Everything it has written so far.
  std::string output() const { return ReadFile(output_path_); }
  // Its exit code (128 + signal when killed by one), or -1 when it is still running after
  // `timeout` (then it keeps running).
  int Wait(absl::Duration timeout);
  void Signal(int signal);
  // Whether it has installed a handler for `signal` (from /proc/PID/status), so a test can send
  // the signal knowing the program, not the default action, will answer it.
  bool Catches(int signal) const;

 private:
  std::string dir_;
  std::string output_path_;
  pid_t pid_ = -1;
  int exit_code_ = -1;
};

// Where fp8d, fp8ctl and their siblings are: the folder named by FP8D_BIN_DIR when it is set
// (bundle/bin on the GPU machine), else the build's paths compiled in.
inline constexpr char kBinDirVariable[] = "FP8D_BIN_DIR";
std::string BinaryPath(const char* name);

}  // namespace fp8d::itest
