#include "server/job_telemetry.h"

#include <filesystem>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "server/checkpoint_catalog.h"
#include "server/resource_names.h"
#include "spdlog/spdlog.h"

namespace fp8d {
namespace fs = std::filesystem;

namespace {

int64_t FileSize(const std::string& path) {
  std::error_code ec;
  const auto size = fs::file_size(path, ec);
  return ec ? -1 : static_cast<int64_t>(size);
}

}  // namespace

std::string DescribeDamage(const std::string& file, const LogDamage& damage) {
  std::string out;
  if (damage.header_repaired) absl::StrAppend(&out, file, ": its header was damaged");
  if (damage.damaged_regions > 0) {
    absl::StrAppend(&out, out.empty() ? file : std::string(";"), " ", damage.damaged_bytes,
                    " damaged bytes in ", damage.damaged_regions,
                    " places (first at offset ", damage.first_damaged_offset,
                    ") were skipped");
  }
  absl::StrAppend(&out, "; every intact record is kept");
  return out;
}

absl::StatusOr<std::unique_ptr<JobTelemetry>> JobTelemetry::Open(const std::string& job_id,
                                                                  const std::string& job_dir,
                                                                  std::shared_ptr<JobFeeds> feeds,
                                                                  MetricObserver observer,
                                                                  int64_t total_steps) {
  // A job runs again only from a checkpoint (or step 0) after a stop: the steps it re-runs are
  // already in its logs, so they are not logged twice.
  auto log = MetricLog::Open(job_dir, /*skip_logged_steps=*/true);
  if (!log.ok()) return log.status();
  auto tensorboard = TensorBoardWriter::Open(job_dir, total_steps);
  if (!tensorboard.ok()) {
    spdlog::warn("{}: no TensorBoard events: {}", job_id, tensorboard.status().ToString());
  }
  feeds->metrics.Reopen();
  feeds->amax.Reopen();
  auto telemetry = std::unique_ptr<JobTelemetry>(
      new JobTelemetry(job_id, *std::move(log), std::move(feeds), std::move(observer)));
  if (tensorboard.ok()) telemetry->tensorboard_ = *std::move(tensorboard);
  telemetry->metric_end_ = FileSize(telemetry->log_->metric_path());
  telemetry->amax_end_ = FileSize(telemetry->log_->amax_path());
  // Damage found on opening is reported where users look: in the job's metric stream.
  const std::pair<const char*, LogDamage> logs[] = {
      {kMetricLogFile, telemetry->log_->metric_damage()},
      {kAmaxLogFile, telemetry->log_->amax_damage()}};
  for (const auto& [file, damage] : logs) {
    if (!damage.any()) continue;
    fp8d::v1::MetricRecord event;
    event.mutable_event()->set_step(telemetry->log_->last_logged_step());
    event.mutable_event()->set_kind("log_damaged");
    event.mutable_event()->set_message(DescribeDamage(file, damage));
    telemetry->OnMetric(event);
  }
  return telemetry;
}

JobTelemetry::JobTelemetry(std::string job_id, std::unique_ptr<MetricLog> log,
                           std::shared_ptr<JobFeeds> feeds, MetricObserver observer)
    : job_id_(std::move(job_id)),
      log_(std::move(log)), feeds_(std::move(feeds)), observer_(std::move(observer)) {}

void JobTelemetry::OnMetric(const fp8d::v1::MetricRecord& record) {
  if (log_->AlreadyLogged(record)) {
    if (observer_) observer_(record);  // progress still shows the re-run
    return;
  }
  fp8d::v1::MetricRecord stored = record;
  if (stored.has_event() && !stored.event().checkpoint().empty()) {
    std::string file = fs::path(stored.event().checkpoint()).filename().string();
    if (absl::EndsWith(file, kCheckpointSuffix)) {
      file.resize(file.size() - std::string(kCheckpointSuffix).size());
    }
    stored.mutable_event()->set_checkpoint(CheckpointResourceName(job_id_, file));
  }
  auto seq = log_->AppendMetric(&stored);
  if (!seq.ok()) {
    // Training goes on; the record is missing from the log and therefore from every stream.
    spdlog::warn("metric log {}: {}", log_->metric_path(), seq.status().ToString());
  } else {
    const int64_t end = FileSize(log_->metric_path());
    feeds_->metrics.Publish(stored, metric_end_, end);
    metric_end_ = end;
  }
  if (tensorboard_) tensorboard_->OnMetric(stored);
  if (observer_) observer_(stored);
}

void JobTelemetry::OnAmax(const fp8d::v1::AmaxRecord& record) {
  if (log_->AlreadyLogged(record)) return;
  if (absl::Status s = log_->AppendAmax(record); !s.ok()) {
    spdlog::warn("amax log {}: {}", log_->amax_path(), s.ToString());
    return;
  }
  const int64_t end = FileSize(log_->amax_path());
  feeds_->amax.Publish(record, amax_end_, end);
  amax_end_ = end;
  if (tensorboard_) tensorboard_->OnAmax(record);
}

}  // namespace fp8d
