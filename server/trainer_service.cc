#include "server/trainer_service.h"

#include <algorithm>
#include <filesystem>
#include <optional>

#include "absl/strings/str_cat.h"
#include "absl/time/time.h"
#include "core/metric_log.h"
#include "core/sha256.h"
#include "core/user_regex.h"
#include "server/bearer_token.h"
#include "server/checkpoint_catalog.h"
#include "server/grpc_status.h"
#include "server/job_telemetry.h"
#include "server/request_limits.h"
#include "spdlog/spdlog.h"

namespace fp8d {
namespace v1 = fp8d::v1;

namespace {

// How often a follower with nothing to send re-checks for a cancelled call or an ended job.
constexpr absl::Duration kFollowPoll = absl::Milliseconds(500);

template <typename T>
grpc::Status Reply(const absl::StatusOr<T>& result, T* out) {
  if (!result.ok()) return ToGrpcStatus(result.status());
  *out = *result;
  return grpc::Status::OK;
}

}  // namespace

TrainerService::TrainerService(JobRegistry* registry, TrainerServiceOptions options)
    : registry_(registry),
      token_(std::move(options.token)),
      watchdog_(options.stall_timeout) {}

template <typename Record>
bool TrainerService::Write(grpc::ServerContext* ctx, grpc::ServerWriter<Record>* writer,
                           const Record& record) {
  StallWatchdog::WriteGuard guard(&watchdog_, ctx);
  return writer->Write(record);
}

// Replays a job's log from the start and, when `follow`, keeps sending new records until the
// job ends. Records come from the feed's buffer when the follower is at its position and from
// the log file otherwise, a bounded amount per read. `read(offset)` reads the file; `keep`
// filters and may rewrite. Damaged records the file read skips are reported to the client by
// `read` itself (StreamMetrics sends a log_damaged event) and in the daemon's log.
template <typename Record, typename ReadFn, typename KeepFn>
grpc::Status TrainerService::ReplayAndFollow(grpc::ServerContext* ctx, RecordFeed<Record>& feed,
                                             ReadFn read, KeepFn keep,
                                             const std::function<bool()>& ended, bool follow,
                                             grpc::ServerWriter<Record>* writer) {
  int64_t offset = 0;   // byte offset in the log; 0 = not read yet
  bool last_pass = false;
  while (true) {
    if (ctx->IsCancelled()) return grpc::Status(grpc::StatusCode::CANCELLED, "stream cancelled");
    const int64_t seen = feed.version();
    std::vector<Record> batch;
    auto taken = offset > 0 ? feed.TakeFrom(offset) : typename RecordFeed<Record>::Taken{};
    if (taken.served) {
      batch = std::move(taken.records);
      offset = taken.next_offset;
    } else {
      auto read_result = read(offset);
      if (read_result.ok()) {
        batch = std::move(read_result->records);
        offset = read_result->next_offset;
      } else if (!absl::IsNotFound(read_result.status())) {  // a queued job has no log yet
        return ToGrpcStatus(read_result.status());
      }
    }
    for (Record& record : batch) {
      if (!keep(&record)) continue;
      if (!Write(ctx, writer, record)) {
        if (ctx->IsCancelled()) {
          return grpc::Status(grpc::StatusCode::CANCELLED,
                              "stream cancelled (the client stopped reading or went away)");
        }
        return grpc::Status::OK;  // the client went away
      }
    }
    if (!batch.empty()) continue;
    if (!follow || last_pass) return grpc::Status::OK;
    if (ended()) {
      last_pass = true;  // records appended before the end was observed: one more read
      continue;
    }
    feed.WaitForChange(seen, kFollowPoll);
  }
}

grpc::Status TrainerService::Authorize(const grpc::ServerContext* ctx) const {
  if (token_.empty()) return grpc::Status::OK;
  const auto& md = ctx->client_metadata();
  auto it = md.find("authorization");
  const bool present = it != md.end();
  absl::string_view header = present ? absl::string_view(it->second.data(), it->second.size())
                                    : absl::string_view();
  return ToGrpcStatus(CheckBearer(token_, present, header));
}

// Every call: the token (when one is configured), then the bounds on what the request holds.
#define FP8D_AUTHORIZE(ctx)                                                          \
  do {                                                                               \
    if (grpc::Status auth = Authorize(ctx); !auth.ok()) return auth;                 \
    if (absl::Status bounds = CheckRequestBounds(*req); !bounds.ok()) {              \
      return ToGrpcStatus(bounds);                                                   \
    }                                                                                \
  } while (0)

grpc::Status TrainerService::GetServerInfo(grpc::ServerContext* ctx,
                                           const v1::GetServerInfoRequest* req,
                                           v1::ServerInfo* resp) {
  FP8D_AUTHORIZE(ctx);
  *resp = registry_->Info();
  return grpc::Status::OK;
}

grpc::Status TrainerService::SubmitJob(grpc::ServerContext* ctx, const v1::SubmitJobRequest* req,
                                       v1::Job* resp) {
  FP8D_AUTHORIZE(ctx);
  return Reply(registry_->Submit(*req), resp);
}

grpc::Status TrainerService::GetJob(grpc::ServerContext* ctx, const v1::GetJobRequest* req,
                                    v1::Job* resp) {
  FP8D_AUTHORIZE(ctx);
  return Reply(registry_->Get(req->name()), resp);
}

grpc::Status TrainerService::ListJobs(grpc::ServerContext* ctx, const v1::ListJobsRequest* req,
                                      v1::ListJobsResponse* resp) {
  FP8D_AUTHORIZE(ctx);
  return Reply(registry_->List(req->page_size(), req->page_token()), resp);
}

grpc::Status TrainerService::CancelJob(grpc::ServerContext* ctx, const v1::CancelJobRequest* req,
                                       v1::Job* resp) {
  FP8D_AUTHORIZE(ctx);
  return Reply(registry_->Cancel(req->name()), resp);
}

grpc::Status TrainerService::DeleteJob(grpc::ServerContext* ctx, const v1::DeleteJobRequest* req,
                                       v1::DeleteJobResponse* resp) {
  FP8D_AUTHORIZE(ctx);
  return Reply(registry_->Delete(req->name()), resp);
}

grpc::Status TrainerService::PauseJob(grpc::ServerContext* ctx, const v1::PauseJobRequest* req,
                                      v1::Job* resp) {
  FP8D_AUTHORIZE(ctx);
  return Reply(registry_->Pause(req->name()), resp);
}

grpc::Status TrainerService::ResumeJob(grpc::ServerContext* ctx, const v1::ResumeJobRequest* req,
                                       v1::Job* resp) {
  FP8D_AUTHORIZE(ctx);
  return Reply(registry_->Resume(req->name()), resp);
}

grpc::Status TrainerService::UpdateRecipe(grpc::ServerContext* ctx,
                                          const v1::UpdateRecipeRequest* req,
                                          v1::UpdateRecipeResponse* resp) {
  FP8D_AUTHORIZE(ctx);
  return Reply(registry_->UpdateRecipe(*req), resp);
}

grpc::Status TrainerService::GetRecipe(grpc::ServerContext* ctx, const v1::GetRecipeRequest* req,
                                       v1::RecipeState* resp) {
  FP8D_AUTHORIZE(ctx);
  return Reply(registry_->GetRecipe(req->name()), resp);
}

grpc::Status TrainerService::StreamMetrics(grpc::ServerContext* ctx,
                                           const v1::StreamMetricsRequest* req,
                                           grpc::ServerWriter<v1::MetricRecord>* writer) {
  FP8D_AUTHORIZE(ctx);
  std::optional<StreamLimiter::Slot> slot;
  if (absl::Status s = limiter_.Acquire(ctx->peer(), StreamPool::kFollow, &slot); !s.ok()) {
    return ToGrpcStatus(s);
  }
  if (req->from_step() < 0) {
    return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT,
                        absl::StrCat("from_step ", req->from_step(), " must be >= 0"));
  }
  auto source = registry_->Stream(req->name());
  if (!source.ok()) return ToGrpcStatus(source.status());
  const int64_t from_step = req->from_step();
  const std::string path = source->metric_log;
  const std::string id = source->job_id;
  return ReplayAndFollow<v1::MetricRecord>(
      ctx, source->feeds->metrics,
      [&](int64_t offset) {
        auto read = ReadMetricLog(path, 0, from_step, offset);
        if (read.ok() && read->damage.damaged_regions > 0) {
          // Tell the client what it is not getting, where the damage is.
          spdlog::warn("{}: {}", path, DescribeDamage(kMetricLogFile, read->damage));
          v1::MetricRecord event;
          const int64_t step = read->records.empty() ? from_step
                                                     : MetricRecordStep(read->records.front());
          event.mutable_event()->set_step(step);
          event.mutable_event()->set_kind("log_damaged");
          event.mutable_event()->set_message(DescribeDamage(kMetricLogFile, read->damage));
          read->records.insert(read->records.begin(), std::move(event));
        }
        return read;
      },
      [&](v1::MetricRecord* r) { return MetricRecordStep(*r) >= from_step; },
      [&] { return registry_->StreamEnded(id); }, req->follow(), writer);
}

grpc::Status TrainerService::StreamAmax(grpc::ServerContext* ctx,
                                        const v1::StreamAmaxRequest* req,
                                        grpc::ServerWriter<v1::AmaxRecord>* writer) {
  FP8D_AUTHORIZE(ctx);
  std::optional<StreamLimiter::Slot> slot;
  if (absl::Status s = limiter_.Acquire(ctx->peer(), StreamPool::kFollow, &slot); !s.ok()) {
    return ToGrpcStatus(s);
  }
  if (req->from_step() < 0) {
    return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT,
                        absl::StrCat("from_step ", req->from_step(), " must be >= 0"));
  }
  std::unique_ptr<const RE2> layer_regex;
  if (!req->layer_regex().empty()) {
    auto compiled = CompileUserRegex(req->layer_regex(), "layer_regex");
    if (!compiled.ok()) return ToGrpcStatus(compiled.status());
    layer_regex = *std::move(compiled);
  }
  auto source = registry_->Stream(req->name());
  if (!source.ok()) return ToGrpcStatus(source.status());
  const int64_t from_step = req->from_step();
  const std::string path = source->amax_log;
  const std::string id = source->job_id;
  return ReplayAndFollow<v1::AmaxRecord>(
      ctx, source->feeds->amax,
      [&](int64_t offset) { return ReadAmaxLog(path, from_step, offset); },
      [&](v1::AmaxRecord* r) {
        if (r->step() < from_step) return false;
        if (!layer_regex) return true;
        // Keep only the tensors of matching layers (partial match, like grep).
        auto* tensors = r->mutable_tensors();
        tensors->erase(std::remove_if(tensors->begin(), tensors->end(),
                                      [&](const v1::TensorAmax& t) {
                                        return !PartialMatch(*layer_regex, t.layer());
                                      }),
                       tensors->end());
        return !tensors->empty();
      },
      [&] { return registry_->StreamEnded(id); }, req->follow(), writer);
}

grpc::Status TrainerService::SaveCheckpoint(grpc::ServerContext* ctx,
                                            const v1::SaveCheckpointRequest* req,
                                            v1::Checkpoint* resp) {
  FP8D_AUTHORIZE(ctx);
  return Reply(registry_->SaveCheckpoint(req->name()), resp);
}

grpc::Status TrainerService::ListCheckpoints(grpc::ServerContext* ctx,
                                             const v1::ListCheckpointsRequest* req,
                                             v1::ListCheckpointsResponse* resp) {
  FP8D_AUTHORIZE(ctx);
  if (req->page_size() < 0) {
    return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT,
                        absl::StrCat("page_size ", req->page_size(),
                                     " is out of range: allowed 0..", kMaxCheckpointPageSize,
                                     " (0 = ", kMaxCheckpointPageSize, ")"));
  }
  auto list = registry_->ListCheckpoints(req->name());
  if (!list.ok()) return ToGrpcStatus(list.status());
  // Pages start after the checkpoint named by the token (listings are in step order), and end
  // at page_size entries or kMaxListResponseBytes.
  size_t first = 0;
  if (!req->page_token().empty()) {
    auto after = std::find_if(list->begin(), list->end(), [&](const v1::Checkpoint& c) {
      return c.name() == req->page_token();
    });
    if (after == list->end()) {
      return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT,
                          absl::StrCat("page_token `", req->page_token(),
                                       "` is not a token from a previous ListCheckpoints reply"));
    }
    first = static_cast<size_t>(after - list->begin()) + 1;
  }
  const size_t limit = req->page_size() == 0
                           ? kMaxCheckpointPageSize
                           : std::min<size_t>(req->page_size(), kMaxCheckpointPageSize);
  size_t bytes = 0, i = first;
  for (; i < list->size() && i - first < limit; ++i) {
    const size_t add = (*list)[i].ByteSizeLong();
    if (i > first && bytes + add > kMaxListResponseBytes) break;
    bytes += add;
    *resp->add_checkpoints() = std::move((*list)[i]);
  }
  if (i < list->size()) resp->set_next_page_token(resp->checkpoints().rbegin()->name());
  return grpc::Status::OK;
}

grpc::Status TrainerService::PullCheckpoint(grpc::ServerContext* ctx,
                                            const v1::PullCheckpointRequest* req,
                                            grpc::ServerWriter<v1::CheckpointChunk>* writer) {
  FP8D_AUTHORIZE(ctx);
  std::optional<StreamLimiter::Slot> slot;
  if (absl::Status s = limiter_.Acquire(ctx->peer(), StreamPool::kPull, &slot); !s.ok()) {
    return ToGrpcStatus(s);
  }
  auto file = registry_->CheckpointFile(req->name());
  if (!file.ok()) return ToGrpcStatus(file.status());
  const auto& [checkpoint, path] = *file;
  // The hash recorded when the checkpoint was written, not one of the bytes as they are now:
  // the client checks what it received against it, so damage on disk cannot pass as verified.
  auto sha = registry_->catalog().PullSha256(path);
  if (!sha.ok()) return ToGrpcStatus(sha.status());
  std::error_code ec;
  const auto size = static_cast<int64_t>(std::filesystem::file_size(path, ec));
  if (req->offset() < 0 || req->offset() > size) {
    return grpc::Status(grpc::StatusCode::OUT_OF_RANGE,
                        absl::StrCat("offset ", req->offset(), " is outside ", checkpoint,
                                     ": allowed 0..", size));
  }
  int64_t offset = req->offset();
  Sha256 sent;  // of the whole file when the pull starts at 0: checked here too
  do {  // at least one chunk, so a pull of a complete file still learns size and hash
    if (ctx->IsCancelled()) return grpc::Status(grpc::StatusCode::CANCELLED, "pull cancelled");
    auto data = ReadFileRange(path, offset, kMaxPullChunkBytes);
    if (!data.ok()) return ToGrpcStatus(data.status());
    v1::CheckpointChunk chunk;
    chunk.set_checkpoint(checkpoint);
    chunk.set_offset(offset);
    chunk.set_total_size(size);
    chunk.set_sha256(*sha);
    offset += static_cast<int64_t>(data->size());
    if (req->offset() == 0) sent.Update(*data);
    *chunk.mutable_data() = *std::move(data);
    if (!Write(ctx, writer, chunk)) {
      if (ctx->IsCancelled()) return grpc::Status(grpc::StatusCode::CANCELLED, "pull cancelled");
      return grpc::Status::OK;
    }
  } while (offset < size);
  if (req->offset() == 0) {
    if (const std::string actual = sent.HexDigest(); actual != *sha) {
      return grpc::Status(grpc::StatusCode::DATA_LOSS,
                          absl::StrCat(checkpoint, " is damaged on disk: its SHA-256 is ", actual,
                                       " but ", *sha, " was recorded when it was written"));
    }
  }
  return grpc::Status::OK;
}

}  // namespace fp8d
