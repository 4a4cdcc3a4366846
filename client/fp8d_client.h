// A small C++ client for fp8d.v1.Trainer: connection with an optional bearer token, one method
// per RPC returning absl::StatusOr, callbacks for server streams, and a checkpoint pull that
// resumes an interrupted download and verifies SHA-256. Depends on the generated proto only.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "fp8d/v1/trainer.grpc.pb.h"

namespace fp8d::client {

inline constexpr char kDefaultAddress[] = "127.0.0.1:7070";

struct ClientOptions {
  std::string address = kDefaultAddress;  // HOST:PORT
  std::string token;                      // bearer token; empty sends none
  bool tls = false;                       // TLS with the system roots or `tls_ca_file`
  std::string tls_ca_file;
  int unary_timeout_ms = 30000;           // deadline of every non-streaming call
};

// The first line of a token file, trimmed. NOT_FOUND naming the file when it cannot be read.
absl::StatusOr<std::string> ReadTokenFile(const std::string& path);

// grpc::Status -> absl::Status (same canonical codes).
absl::Status FromGrpc(const grpc::Status& status);

// "jobs/x" stays, "x" becomes "jobs/x", so users can type bare ids.
std::string QualifyJobName(const std::string& job);

// Stream callbacks return false to stop reading (the call is then cancelled, not the job).
using MetricCallback = std::function<bool(const fp8d::v1::MetricRecord&)>;
using AmaxCallback = std::function<bool(const fp8d::v1::AmaxRecord&)>;

struct PullResult {
  std::string checkpoint;   // resource name that was pulled
  std::string path;         // final file
  int64_t size_bytes = 0;
  std::string sha256;
  int64_t resumed_from = 0; // bytes already present in PATH.partial when the pull began
};
// Called after each chunk with (bytes on disk, total bytes).
using PullProgress = std::function<void(int64_t, int64_t)>;

class TrainerClient {
 public:
  static absl::StatusOr<std::unique_ptr<TrainerClient>> Connect(const ClientOptions& options);

  absl::StatusOr<fp8d::v1::ServerInfo> GetServerInfo();
  absl::StatusOr<fp8d::v1::Job> SubmitJob(const fp8d::v1::SubmitJobRequest& request);
  // A job file's text plus `--set key=value` overrides, parsed by the daemon. `file_name`
  // (e.g. "demo.yaml") is what the daemon's errors call the file.
  absl::StatusOr<fp8d::v1::Job> SubmitJobText(const std::string& text,
                                              const std::vector<std::string>& sets,
                                              const std::string& request_id = "",
                                              const std::string& file_name = "");
  absl::StatusOr<fp8d::v1::Job> GetJob(const std::string& job);
  absl::StatusOr<fp8d::v1::ListJobsResponse> ListJobs(int page_size, const std::string& token);
  // Every page, in submission order.
  absl::StatusOr<std::vector<fp8d::v1::Job>> ListAllJobs();
  absl::StatusOr<fp8d::v1::Job> CancelJob(const std::string& job);
  absl::StatusOr<fp8d::v1::DeleteJobResponse> DeleteJob(const std::string& job);
  absl::StatusOr<fp8d::v1::Job> PauseJob(const std::string& job);
  absl::StatusOr<fp8d::v1::Job> ResumeJob(const std::string& job);
  absl::StatusOr<fp8d::v1::UpdateRecipeResponse> UpdateRecipe(
      const fp8d::v1::UpdateRecipeRequest& request);
  absl::StatusOr<fp8d::v1::RecipeState> GetRecipe(const std::string& job);
  absl::StatusOr<fp8d::v1::Checkpoint> SaveCheckpoint(const std::string& job);
  absl::StatusOr<std::vector<fp8d::v1::Checkpoint>> ListCheckpoints(const std::string& job);

  // Blocks until the stream ends (job finished, replay done, or the callback returned false).
  absl::Status StreamMetrics(const fp8d::v1::StreamMetricsRequest& request,
                             const MetricCallback& on_record);
  absl::Status StreamAmax(const fp8d::v1::StreamAmaxRequest& request,
                          const AmaxCallback& on_record);

  // Pulls `name` (jobs/{job}/checkpoints/{c}, or jobs/{job} for the latest) into `out_path`:
  // appends to OUT.partial (resuming from its size), verifies SHA-256 of the whole file, then
  // renames. A partial that turns out to be of another file is discarded and pulled afresh once.
  absl::StatusOr<PullResult> PullCheckpoint(const std::string& name, const std::string& out_path,
                                            const PullProgress& progress = nullptr);

  // The raw stub, for calls this class does not wrap.
  fp8d::v1::Trainer::Stub& stub() { return *stub_; }
  // A context carrying the token and, when `deadline_ms` > 0, a deadline.
  std::unique_ptr<grpc::ClientContext> NewContext(int deadline_ms) const;

 private:
  TrainerClient(ClientOptions options, std::shared_ptr<grpc::Channel> channel);
  absl::StatusOr<PullResult> PullOnce(const std::string& name, const std::string& out_path,
                                      const PullProgress& progress);

  ClientOptions options_;
  std::shared_ptr<grpc::Channel> channel_;
  std::unique_ptr<fp8d::v1::Trainer::Stub> stub_;
};

// SHA-256 of a file, lower-case hex (used to verify pulls).
absl::StatusOr<std::string> FileSha256(const std::string& path);

}  // namespace fp8d::client
