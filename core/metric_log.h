// A job's persistent metric streams: an append-only log of MetricRecord (metrics.log) and one of
// AmaxRecord (amax.log) in the job's directory. The daemon replays them for StreamMetrics and
// StreamAmax and follows them while the job runs; they outlive the daemon process.
//
// File format (little-endian), identical for both logs:
//   header  16 bytes: "fp8dlog\0" (8 bytes), uint32 format version (1),
//                     uint32 record type (1 = fp8d.v1.MetricRecord, 2 = fp8d.v1.AmaxRecord)
//   record  uint32 payload length, uint32 CRC-32C over (the 4 length bytes + payload),
//           payload = the serialized protobuf message
// A crash mid-append leaves at most one torn record at the end: readers stop before it and
// reopening the log for appending truncates it. Damage anywhere else (a flipped byte, a bad
// header) costs only the records it touches: readers and the appender skip a bad record by
// finding the next intact one (a length and CRC-32C that check out), keep everything after
// it, and report what they skipped; a damaged header is rewritten. Bytes are dropped only at
// the very end, and only when no intact record follows them.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string_view>
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

// What opening or reading a log found wrong with it.
struct LogDamage {
  int64_t damaged_bytes = 0;     // skipped between intact records
  int damaged_regions = 0;
  int64_t first_damaged_offset = -1;
  int64_t torn_tail_bytes = 0;   // incomplete bytes after the last intact record
  bool header_repaired = false;  // (Open only) the 16-byte header was damaged and rewritten
  bool any() const { return damaged_regions > 0 || header_repaired; }
};

// One append-only record file. Open() creates it (with its header) or validates the header
// (rewriting a damaged one), skips damaged records and truncates a torn tail; Append() writes
// one framed record and hands it to the kernel before returning, so a reader in another thread
// or process sees it and a process crash cannot lose it.
class RecordLog {
 public:
  // `on_record` sees every intact record found on open.
  static absl::StatusOr<std::unique_ptr<RecordLog>> Open(
      const std::string& path, LogRecordType type,
      const std::function<void(std::string_view payload)>& on_record = nullptr);
  ~RecordLog();
  RecordLog(const RecordLog&) = delete;
  RecordLog& operator=(const RecordLog&) = delete;

  absl::Status Append(const std::string& payload);
  int64_t record_count() const;   // intact records, including those found on open
  const std::string& path() const { return path_; }
  const LogDamage& damage_on_open() const { return damage_; }

 private:
  RecordLog(std::string path, int fd, int64_t records, LogDamage damage);

  const std::string path_;
  mutable absl::Mutex mu_;
  int fd_ ABSL_GUARDED_BY(mu_);
  int64_t records_ ABSL_GUARDED_BY(mu_);
  const LogDamage damage_;
};

// The step a metric record belongs to (StepMetrics, EvalMetrics or Event step).
int64_t MetricRecordStep(const fp8d::v1::MetricRecord& record);

template <typename Record>
struct LogRead {
  std::vector<Record> records;
  // Byte offset after the last intact record: pass it back to continue reading (following).
  int64_t next_offset = kLogHeaderBytes;
  bool torn_tail = false;   // bytes after next_offset do not (yet) form a whole record
  LogDamage damage;         // damaged records skipped by this read (and a damaged header)
};

// Reads stop after the record that brings the payload bytes read to this much, so replaying a
// long log never holds all of it in memory; pass next_offset back for the rest.
inline constexpr int64_t kMaxLogReadBytes = 4 << 20;

// Records with seq >= from_seq and step >= from_step, reading from `offset` (0 = the start).
// NOT_FOUND when the file is missing; DATA_LOSS when the header says the file holds the other
// record type. A torn tail ends the read without an error; damaged records are skipped and
// counted in `damage`. `max_records` > 0 stops after that many records (a page): next_offset
// then continues with the record after the last one returned.
absl::StatusOr<LogRead<fp8d::v1::MetricRecord>> ReadMetricLog(const std::string& path,
                                                              int64_t from_seq,
                                                              int64_t from_step,
                                                              int64_t offset = 0,
                                                              size_t max_records = 0);
// AmaxRecords with step >= from_step.
absl::StatusOr<LogRead<fp8d::v1::AmaxRecord>> ReadAmaxLog(const std::string& path,
                                                          int64_t from_step, int64_t offset = 0,
                                                          size_t max_records = 0);

// Both logs of one job, as a MetricSink. Assigns MetricRecord.seq (one more than the largest in
// the log) and unix_micros when unset. Resuming a job appends to the existing logs.
class MetricLog : public MetricSink {
 public:
  // Creates `dir` when missing and opens (or recovers) dir/metrics.log and dir/amax.log.
  // With `skip_logged_steps` (a resumed job), step, eval and amax records of steps the log
  // already holds are not appended again: a job resumed from step N re-runs the steps after N
  // that were logged before it stopped, and exact resume makes them the same. Events are
  // always appended.
  static absl::StatusOr<std::unique_ptr<MetricLog>> Open(const std::string& dir,
                                                         bool skip_logged_steps = false);

  // True when `record` repeats a step already logged and skip_logged_steps is on.
  bool AlreadyLogged(const fp8d::v1::MetricRecord& record) const;
  bool AlreadyLogged(const fp8d::v1::AmaxRecord& record) const;
  const LogDamage& metric_damage() const { return metrics_->damage_on_open(); }
  const LogDamage& amax_damage() const { return amax_->damage_on_open(); }
  int64_t last_logged_step() const;  // the largest step of any record found or appended

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
  bool skip_logged_steps_ = false;
  mutable absl::Mutex seq_mu_;   // seq assignment and append are one step
  int64_t next_seq_ ABSL_GUARDED_BY(seq_mu_) = 0;
  int64_t max_step_ ABSL_GUARDED_BY(seq_mu_) = 0;       // StepMetrics
  int64_t max_eval_step_ ABSL_GUARDED_BY(seq_mu_) = -1;
  int64_t max_amax_step_ ABSL_GUARDED_BY(seq_mu_) = 0;
  int64_t max_any_step_ ABSL_GUARDED_BY(seq_mu_) = 0;
  mutable absl::Mutex status_mu_;
  absl::Status status_ ABSL_GUARDED_BY(status_mu_);
};

}  // namespace fp8d
