// A running job's MetricSink: appends every record to the job's persisted logs, then publishes
// it to the in-memory feeds that wake StreamMetrics/StreamAmax followers, then tells the
// registry (progress shown by GetJob); it also writes the job's TensorBoard event file
// (core/tensorboard_writer.h). Runs on the training thread and never waits for a client.
#pragma once

#include <functional>
#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "core/metric_log.h"
#include "core/tensorboard_writer.h"
#include "core/trainer.h"
#include "fp8d/v1/telemetry.pb.h"
#include "server/record_feed.h"

namespace fp8d {

// Records kept in memory per job for followers that keep up; a follower further behind reads
// the log file. Amax records are larger (every FP8 tensor), so fewer are kept.
inline constexpr size_t kMetricFeedCapacity = 1024;
inline constexpr size_t kAmaxFeedCapacity = 64;

struct JobFeeds {
  RecordFeed<fp8d::v1::MetricRecord> metrics{kMetricFeedCapacity};
  RecordFeed<fp8d::v1::AmaxRecord> amax{kAmaxFeedCapacity};
};

// "metrics.log: 120 damaged bytes in 1 places (first at offset 4096) were skipped; ..."
std::string DescribeDamage(const std::string& file, const LogDamage& damage);

class JobTelemetry : public MetricSink {
 public:
  using MetricObserver = std::function<void(const fp8d::v1::MetricRecord&)>;

  // Opens (or recovers and continues) the logs in `job_dir` and reopens `feeds`.
  // Event.checkpoint (a file path from the trainer) is stored as the checkpoint's resource name
  // `jobs/{job_id}/checkpoints/{c}`, which clients can pull. `total_steps` spaces out the FP8
  // statistics in the TensorBoard events; an event file that cannot be created is a warning.
  static absl::StatusOr<std::unique_ptr<JobTelemetry>> Open(const std::string& job_id,
                                                            const std::string& job_dir,
                                                            std::shared_ptr<JobFeeds> feeds,
                                                            MetricObserver observer,
                                                            int64_t total_steps = 0);

  void OnMetric(const fp8d::v1::MetricRecord& record) override;
  void OnAmax(const fp8d::v1::AmaxRecord& record) override;

 private:
  JobTelemetry(std::string job_id, std::unique_ptr<MetricLog> log,
               std::shared_ptr<JobFeeds> feeds, MetricObserver observer);

  const std::string job_id_;
  std::unique_ptr<MetricLog> log_;
  std::unique_ptr<TensorBoardWriter> tensorboard_;  // null when its file could not be created
  std::shared_ptr<JobFeeds> feeds_;
  MetricObserver observer_;
  int64_t metric_end_ = 0;  // byte offset of the end of each log (only this thread appends)
  int64_t amax_end_ = 0;
};

}  // namespace fp8d
