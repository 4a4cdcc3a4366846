// fp8d.v1.Trainer over gRPC: authentication, request checks, and the translation between the
// registry (absl::Status) and the wire (grpc::Status via server/grpc_status.h). Streams replay
// the persisted logs and then follow the job through its in-memory feeds.
#pragma once

#include <functional>
#include <string>

#include "fp8d/v1/trainer.grpc.pb.h"
#include "server/job_registry.h"
#include "server/stream_limits.h"

namespace fp8d {

inline constexpr size_t kMaxCheckpointPageSize = 1000;

struct TrainerServiceOptions {
  // Empty = no authentication (loopback, or TLS with verified client certificates; fp8d_main
  // enforces that).
  std::string token;
  absl::Duration stall_timeout = kDefaultStallTimeout;
};

class TrainerService final : public fp8d::v1::Trainer::Service {
 public:
  TrainerService(JobRegistry* registry, TrainerServiceOptions options);

  grpc::Status GetServerInfo(grpc::ServerContext* ctx, const fp8d::v1::GetServerInfoRequest* req,
                             fp8d::v1::ServerInfo* resp) override;
  grpc::Status SubmitJob(grpc::ServerContext* ctx, const fp8d::v1::SubmitJobRequest* req,
                         fp8d::v1::Job* resp) override;
  grpc::Status GetJob(grpc::ServerContext* ctx, const fp8d::v1::GetJobRequest* req,
                      fp8d::v1::Job* resp) override;
  grpc::Status ListJobs(grpc::ServerContext* ctx, const fp8d::v1::ListJobsRequest* req,
                        fp8d::v1::ListJobsResponse* resp) override;
  grpc::Status CancelJob(grpc::ServerContext* ctx, const fp8d::v1::CancelJobRequest* req,
                         fp8d::v1::Job* resp) override;
  grpc::Status PauseJob(grpc::ServerContext* ctx, const fp8d::v1::PauseJobRequest* req,
                        fp8d::v1::Job* resp) override;
  grpc::Status ResumeJob(grpc::ServerContext* ctx, const fp8d::v1::ResumeJobRequest* req,
                         fp8d::v1::Job* resp) override;
  grpc::Status UpdateRecipe(grpc::ServerContext* ctx, const fp8d::v1::UpdateRecipeRequest* req,
                            fp8d::v1::UpdateRecipeResponse* resp) override;
  grpc::Status GetRecipe(grpc::ServerContext* ctx, const fp8d::v1::GetRecipeRequest* req,
                         fp8d::v1::RecipeState* resp) override;
  grpc::Status StreamMetrics(grpc::ServerContext* ctx, const fp8d::v1::StreamMetricsRequest* req,
                             grpc::ServerWriter<fp8d::v1::MetricRecord>* writer) override;
  grpc::Status StreamAmax(grpc::ServerContext* ctx, const fp8d::v1::StreamAmaxRequest* req,
                          grpc::ServerWriter<fp8d::v1::AmaxRecord>* writer) override;
  grpc::Status SaveCheckpoint(grpc::ServerContext* ctx, const fp8d::v1::SaveCheckpointRequest* req,
                              fp8d::v1::Checkpoint* resp) override;
  grpc::Status ListCheckpoints(grpc::ServerContext* ctx,
                               const fp8d::v1::ListCheckpointsRequest* req,
                               fp8d::v1::ListCheckpointsResponse* resp) override;
  grpc::Status PullCheckpoint(grpc::ServerContext* ctx, const fp8d::v1::PullCheckpointRequest* req,
                              grpc::ServerWriter<fp8d::v1::CheckpointChunk>* writer) override;
  grpc::Status DeleteJob(grpc::ServerContext* ctx, const fp8d::v1::DeleteJobRequest* req,
                         fp8d::v1::DeleteJobResponse* resp) override;

  // Streams open right now (exported as fp8d_open_streams).
  int open_streams() const { return limiter_.open(); }

 private:
  grpc::Status Authorize(const grpc::ServerContext* ctx) const;
  // Replays a job's log and, when `follow`, keeps sending until the job ends (see the .cc).
  template <typename Record, typename ReadFn, typename KeepFn>
  grpc::Status ReplayAndFollow(grpc::ServerContext* ctx, RecordFeed<Record>& feed, ReadFn read,
                               KeepFn keep, const std::function<bool()>& ended, bool follow,
                               grpc::ServerWriter<Record>* writer);
  // Writer::Write under the stall watchdog.
  template <typename Record>
  bool Write(grpc::ServerContext* ctx, grpc::ServerWriter<Record>* writer, const Record& r);

  JobRegistry* registry_;
  const std::string token_;
  mutable StreamLimiter limiter_;
  StallWatchdog watchdog_;
};

}  // namespace fp8d
