// A job's persistent metric streams: an append-only log of MetricRecord (metrics.log) and one of
// AmaxRecord (amax.log) in the job's directory. The daemon replays them for StreamMetrics and
// StreamAmax and follows them while the job runs; they outlive the daemon process.
//
// File format (little-endian), identical for both logs:
//   header  16 bytes: "fp8dlog\0" (8 bytes), uint32 format version (1),
//                     uint32 record type (1 = fp8d.v1.MetricRecord, 2 = fp8d.v1.AmaxRecord)
//   record  uint32 payload length, uint32 CRC-32C over (the 4 length bytes + payload),
//           payload = the serialized protobuf message
// A crash mid-append leaves at most one torn record at the end. Readers stop cleanly before it;
// reopening a log for appending truncates it, so a torn tail never makes a log unreadable.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "core/crc32c.h"
#include "core/trainer.h"
#include "fp8d/v1/telemetry.pb.h"

namespace fp8d {

inline constexpr char kMetricLogFile[] = "metrics.log";
inline constexpr char kAmaxLogFile[] = "amax.log";
inline constexpr int64_t kLogHeaderBytes = 16;
// A length above this is corruption, not a record (an AmaxRecord of a 3b model is ~100 KiB).
inline constexpr uint32_t kMaxLogRecordBytes = 64u << 20;

enum class LogRecordType : uint32_t { kMetric = 1, kAmax = 2 };

// One append-only record file. Open() creates it (with its header) or validates the header and
// truncates a torn tail; Append() writes one framed record and hands it to the kernel before
// returning, so a reader in another thread or process sees it and a process crash cannot lose it.
class RecordLog {
 public:
  static absl::StatusOr<std::unique_ptr<RecordLog>> Open(const std::string& path,
                                                         LogRecordType type);
  ~RecordLog();
  RecordLog(const RecordLog&) = delete;
  RecordLog& operator=(const RecordLog&) = delete;

  absl::Status Append(const std::string& payload);
  int64_t record_count() const;   // intact records, including those found on open
  const std::string& path() const { return path_; }

 private:
  RecordLog(std::string path, int fd, int64_t records);

  const std::string path_;
  mutable absl::Mutex mu_;
  int fd_ ABSL_GUARDED_BY(mu_);
  int64_t records_ ABSL_GUARDED_BY(mu_);
};

// The step a metric record belongs to (StepMetrics, EvalMetrics or Event step).
int64_t MetricRecordStep(const fp8d::v1::MetricRecord& record);

template <typename Record>
struct LogRead {
  std::vector<Record> records;
  // Byte offset after the last intact record: pass it back to continue reading (following).
  int64_t next_offset = kLogHeaderBytes;
  bool torn_tail = false;   // bytes after next_offset do not (yet) form a whole record
};

// Records with seq >= from_seq and step >= from_step, reading from `offset` (0 = the start).
// NOT_FOUND when the file is missing; DATA_LOSS for a wrong header. A torn or corrupt tail ends
// the read without an error. `max_records` > 0 stops after that many records (a page):
// next_offset then continues with the record after the last one returned.
absl::StatusOr<LogRead<fp8d::v1::MetricRecord>> ReadMetricLog(const std::string& path,
                                                              int64_t from_seq,
                                                              int64_t from_step,
                                                              int64_t offset = 0,
                                                              size_t max_records = 0);
// AmaxRecords with step >= from_step.
absl::StatusOr<LogRead<fp8d::v1::AmaxRecord>> ReadAmaxLog(const std::string& path,
                                                          int64_t from_step, int64_t offset = 0,
                                                          size_t max_records = 0);

// Both logs of one job, as a MetricSink. Assigns MetricRecord.seq (the record's index in the
// log) and unix_micros when unset. Resuming a job appends to the existing logs.
class MetricLog : public MetricSink {
 public:
  // Creates `dir` when missing and opens (or recovers) dir/metrics.log and dir/amax.log.
  static absl::StatusOr<std::unique_ptr<MetricLog>> Open(const std::string& dir);

  // Returns the seq given to the record; `record` is updated with it.
  absl::StatusOr<int64_t> AppendMetric(fp8d::v1::MetricRecord* record);
  absl::Status AppendAmax(const fp8d::v1::AmaxRecord& record);

  // MetricSink: appends; a write error is logged and remembered (see status()) because training
  // must not stop for a full disk on the log.
  void OnMetric(const fp8d::v1::MetricRecord& record) override;
  void OnAmax(const fp8d::v1::AmaxRecord& record) override;
  absl::Status status() const;

  int64_t metric_count() const { return metrics_->record_count(); }
  std::string metric_path() const { return metrics_->path(); }
  std::string amax_path() const { return amax_->path(); }

 private:
  MetricLog(std::unique_ptr<RecordLog> metrics, std::unique_ptr<RecordLog> amax);

  std::unique_ptr<RecordLog> metrics_;
  std::unique_ptr<RecordLog> amax_;
  absl::Mutex seq_mu_;   // seq assignment and append are one step, so seq == index
  mutable absl::Mutex status_mu_;
  absl::Status status_ ABSL_GUARDED_BY(status_mu_);
};

}  // namespace fp8d
