// The in-memory side of a job's metric or amax stream. The training thread appends each record
// to the persisted log (core/metric_log.h) and then publishes it here; followers (StreamMetrics /
// StreamAmax calls) take records from this bounded buffer and are woken when new ones arrive.
//
// Positions are byte offsets in the log file, so a follower can always switch between the
// buffer and the file: one that starts late or falls further behind than the buffer holds reads
// the file from its offset and comes back to the buffer once it has caught up. Publishing never
// waits for a follower: it takes the mutex only to push one record and signal.
#pragma once

#include <cstdint>
#include <deque>
#include <vector>

#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"

namespace fp8d {

template <typename Record>
class RecordFeed {
 public:
  explicit RecordFeed(size_t capacity) : capacity_(capacity) {}

  // Training thread: `record` occupies [begin_offset, end_offset) in the log file.
  void Publish(const Record& record, int64_t begin_offset, int64_t end_offset) {
    absl::MutexLock lock(&mu_);
    buffer_.push_back(Entry{record, begin_offset, end_offset});
    while (buffer_.size() > capacity_) buffer_.pop_front();
    ++version_;
    closed_ = false;
    changed_.SignalAll();
  }

  // No more records until the job runs again (finished, failed, cancelled, daemon stopping).
  void Close() {
    absl::MutexLock lock(&mu_);
    closed_ = true;
    ++version_;
    changed_.SignalAll();
  }
  // The job runs (again): followers keep waiting for records instead of ending.
  void Reopen() {
    absl::MutexLock lock(&mu_);
    closed_ = false;
    buffer_.clear();  // offsets restart from the reopened log's end
    ++version_;
    changed_.SignalAll();
  }

  struct Taken {
    std::vector<Record> records;
    int64_t next_offset = 0;
    bool served = false;   // false: the buffer does not start at `offset`; read the file
  };
  // Copies every buffered record from byte `offset` on. Not served when `offset` is not the
  // start of a buffered record (the follower is behind the buffer or ahead of it).
  Taken TakeFrom(int64_t offset) {
    absl::MutexLock lock(&mu_);
    Taken taken;
    taken.next_offset = offset;
    for (size_t i = 0; i < buffer_.size(); ++i) {
      if (buffer_[i].begin == offset) {
        for (size_t j = i; j < buffer_.size(); ++j) {
          taken.records.push_back(buffer_[j].record);
          taken.next_offset = buffer_[j].end;
        }
        taken.served = true;
        break;
      }
    }
    if (!taken.served && !buffer_.empty() && buffer_.back().end == offset) taken.served = true;
    return taken;
  }

  // A change counter: followers remember it and wait for it to move.
  int64_t version() {
    absl::MutexLock lock(&mu_);
    return version_;
  }
  bool closed() {
    absl::MutexLock lock(&mu_);
    return closed_;
  }
  // Returns when the version differs from `seen` or after `timeout`.
  void WaitForChange(int64_t seen, absl::Duration timeout) {
    absl::MutexLock lock(&mu_);
    const absl::Time deadline = absl::Now() + timeout;
    while (version_ == seen) {
      if (changed_.WaitWithDeadline(&mu_, deadline)) break;  // true: timed out
    }
  }

 private:
  struct Entry {
    Record record;
    int64_t begin;
    int64_t end;
  };
  const size_t capacity_;
  absl::Mutex mu_;
  absl::CondVar changed_;
  std::deque<Entry> buffer_ ABSL_GUARDED_BY(mu_);
  int64_t version_ ABSL_GUARDED_BY(mu_) = 0;
  bool closed_ ABSL_GUARDED_BY(mu_) = false;
};

}  // namespace fp8d
