#include "core/metric_log.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <optional>
#include <string_view>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "spdlog/spdlog.h"

namespace fp8d {
namespace {

constexpr char kMagic[8] = {'f', 'p', '8', 'd', 'l', 'o', 'g', '\0'};
constexpr uint32_t kLogFormatVersion = 1;
constexpr int64_t kFrameBytes = 8;  // length + CRC
constexpr int kMaxRepairableHeaderBytes = 4;

void PutU32(uint32_t v, char* out) {
  for (int i = 0; i < 4; ++i) out[i] = static_cast<char>((v >> (8 * i)) & 0xFF);
}
uint32_t GetU32(const char* in) {
  uint32_t v = 0;
  for (int i = 0; i < 4; ++i) v |= static_cast<uint32_t>(static_cast<unsigned char>(in[i])) << (8 * i);
  return v;
}

std::string Header(LogRecordType type) {
  std::string h(kMagic, sizeof(kMagic));
  char buf[4];
  PutU32(kLogFormatVersion, buf);
  h.append(buf, 4);
  PutU32(static_cast<uint32_t>(type), buf);
  h.append(buf, 4);
  return h;
}

const char* TypeName(LogRecordType type) {
  return type == LogRecordType::kMetric ? "fp8d.v1.MetricRecord" : "fp8d.v1.AmaxRecord";
}

enum class HeaderState { kOk, kDamaged, kOtherType };

// kOtherType: an intact header for the other record type (the wrong file, not damage).
HeaderState ClassifyHeader(const char* header, LogRecordType type) {
  const bool magic_ok = std::memcmp(header, kMagic, sizeof(kMagic)) == 0;
  const bool version_ok = GetU32(header + 8) == kLogFormatVersion;
  const uint32_t stored = GetU32(header + 12);
  if (magic_ok && version_ok && stored == static_cast<uint32_t>(type)) return HeaderState::kOk;
  if (magic_ok && version_ok &&
      (stored == static_cast<uint32_t>(LogRecordType::kMetric) ||
       stored == static_cast<uint32_t>(LogRecordType::kAmax))) {
    return HeaderState::kOtherType;
  }
  return HeaderState::kDamaged;
}

// A header that differs from the expected one in a few bytes, or is followed by an intact record,
// is a damaged fp8d log; anything else is some other file, which must not be rewritten.
bool LooksLikeDamagedLog(std::string_view stored, LogRecordType type, bool intact_record_follows) {
  const std::string expected = Header(type);
  int differing = 0;
  for (size_t i = 0; i < expected.size(); ++i) differing += stored[i] != expected[i];
  return differing <= kMaxRepairableHeaderBytes || intact_record_follows;
}

absl::Status ForeignFileError(const std::string& path) {
  return absl::DataLossError(absl::StrCat(path, ": not an fp8d log (bad magic)"));
}

absl::Status OtherTypeError(const std::string& path, const char* header, LogRecordType type) {
  return absl::DataLossError(absl::StrCat(path, ": holds record type ", GetU32(header + 12),
                                          ", expected ", static_cast<uint32_t>(type), " (",
                                          TypeName(type), ")"));
}

// Reads a log by absolute offsets (pread), buffering a window so that scanning for the next
// intact record after damage does not issue one read per byte.
class LogFile {
 public:
  LogFile(int fd, int64_t size) : fd_(fd), size_(size) {}
  int64_t size() const { return size_; }

  // `n` bytes at `offset`, or empty when they are not all in the file.
  std::string_view At(int64_t offset, int64_t n) {
    if (offset < 0 || n < 0 || offset + n > size_) return {};
    const int64_t window_end = window_begin_ + static_cast<int64_t>(window_.size());
    if (offset < window_begin_ || offset + n > window_end) {
      const int64_t want = std::min<int64_t>(std::max<int64_t>(n, kWindowBytes), size_ - offset);
      window_.resize(static_cast<size_t>(want));
      int64_t done = 0;
      while (done < want) {
        const ssize_t r = ::pread(fd_, window_.data() + done, want - done, offset + done);
        if (r < 0 && errno == EINTR) continue;
        if (r <= 0) break;
        done += r;
      }
      window_.resize(static_cast<size_t>(done));
      window_begin_ = offset;
      if (done < n) return {};
    }
    return std::string_view(window_).substr(static_cast<size_t>(offset - window_begin_),
                                            static_cast<size_t>(n));
  }

  // The payload of an intact record at `offset`, or nullopt.
  std::optional<std::string_view> RecordAt(int64_t offset) {
    const std::string_view frame = At(offset, kFrameBytes);
    if (frame.empty()) return std::nullopt;
    const uint32_t len = GetU32(frame.data());
    const uint32_t stored_crc = GetU32(frame.data() + 4);
    if (len > kMaxLogRecordBytes || offset + kFrameBytes + len > size_) return std::nullopt;
    const std::string_view whole = At(offset, kFrameBytes + len);
    if (whole.empty()) return std::nullopt;
    uint32_t crc = Crc32c(whole.data(), 4);
    crc = Crc32c(whole.data() + kFrameBytes, len, crc);
    if (crc != stored_crc) return std::nullopt;
    return whole.substr(kFrameBytes);
  }

 private:
  static constexpr int64_t kWindowBytes = 1 << 20;
  int fd_;
  int64_t size_;
  std::string window_;
  int64_t window_begin_ = 0;
};

struct ScanEnd {
  int64_t next_offset = 0;  // after the last intact record taken (or where the scan started)
  bool torn_tail = false;   // bytes after next_offset that hold no intact record
  int64_t tail_bytes = 0;
};

// Walks the intact records from `offset`, calling `fn(payload, end_offset)`; `fn` returns false
// to stop after that record. A bad record followed by an intact one is skipped (and counted in
// `damage`); bytes after the last intact record are a tail, left for the caller.
template <typename Fn>
ScanEnd ScanRecords(LogFile& file, int64_t offset, LogDamage* damage, Fn&& fn) {
  ScanEnd end;
  end.next_offset = offset;
  int64_t pos = offset;
  while (pos < file.size()) {
    std::optional<std::string_view> payload = file.RecordAt(pos);
    if (!payload) {
      int64_t next = -1;
      for (int64_t q = pos + 1; q + kFrameBytes <= file.size(); ++q) {
        if (file.RecordAt(q)) {
          next = q;
          break;
        }
      }
      if (next < 0) {
        end.torn_tail = true;
        end.tail_bytes = file.size() - pos;
        return end;
      }
      if (damage->first_damaged_offset < 0) damage->first_damaged_offset = pos;
      damage->damaged_bytes += next - pos;
      ++damage->damaged_regions;
      pos = next;
      continue;
    }
    const int64_t record_end = pos + kFrameBytes + static_cast<int64_t>(payload->size());
    // The payload view may be invalidated by the next read: hand it over before moving on.
    const bool more = fn(*payload, record_end);
    pos = record_end;
    end.next_offset = pos;
    if (!more) return end;
  }
  return end;
}

absl::Status ErrnoError(const std::string& what, const std::string& path) {
  return absl::InternalError(absl::StrCat(what, " ", path, ": ", std::strerror(errno)));
}

template <typename Record, typename Keep>
absl::StatusOr<LogRead<Record>> ReadLog(const std::string& path, LogRecordType type,
                                        int64_t offset, size_t max_records, Keep&& keep) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return absl::NotFoundError(absl::StrCat("metric log ", path, " does not exist"));
  struct stat st;
  const int64_t size = ::fstat(fd, &st) == 0 ? static_cast<int64_t>(st.st_size) : 0;
  LogFile file(fd, size);
  LogRead<Record> out;
  const std::string header(file.At(0, kLogHeaderBytes));  // a copy: later reads move the window
  if (header.empty()) {
    // A log whose creation was interrupted: nothing in it yet.
    ::close(fd);
    out.next_offset = 0;
    out.torn_tail = size > 0;
    return out;
  }
  const HeaderState state = ClassifyHeader(header.data(), type);
  if (state == HeaderState::kOtherType ||
      (state == HeaderState::kDamaged &&
       !LooksLikeDamagedLog(header, type, file.RecordAt(kLogHeaderBytes).has_value()))) {
    absl::Status s = state == HeaderState::kOtherType ? OtherTypeError(path, header.data(), type)
                                                      : ForeignFileError(path);
    ::close(fd);
    return s;
  }
  if (offset < kLogHeaderBytes) {
    offset = kLogHeaderBytes;
    out.damage.header_repaired = state == HeaderState::kDamaged;  // reported, not rewritten
  }
  int64_t payload_bytes = 0;
  const ScanEnd end = ScanRecords(file, offset, &out.damage,
                                  [&](std::string_view payload, int64_t) {
    Record r;
    if (!r.ParseFromArray(payload.data(), static_cast<int>(payload.size()))) {
      // An intact frame around bytes that are not a record: damage like any other.
      ++out.damage.damaged_regions;
      out.damage.damaged_bytes += static_cast<int64_t>(payload.size()) + kFrameBytes;
      return true;
    }
    if (keep(r)) {
      payload_bytes += static_cast<int64_t>(payload.size());
      out.records.push_back(std::move(r));
    }
    return payload_bytes < kMaxLogReadBytes &&
           (max_records == 0 || out.records.size() < max_records);
  });
  ::close(fd);
  out.next_offset = end.next_offset;
  out.torn_tail = end.torn_tail;
  return out;
}

}  // namespace

int64_t MetricRecordStep(const fp8d::v1::MetricRecord& record) {
  switch (record.record_case()) {
    case fp8d::v1::MetricRecord::kStep: return record.step().step();
    case fp8d::v1::MetricRecord::kEval: return record.eval().step();
    case fp8d::v1::MetricRecord::kEvent: return record.event().step();
    default: return 0;
  }
}

RecordLog::RecordLog(std::string path, int fd, int64_t records, LogDamage damage)
    : path_(std::move(path)), fd_(fd), records_(records), damage_(damage) {}

RecordLog::~RecordLog() {
  absl::MutexLock lock(&mu_);
  if (fd_ >= 0) ::close(fd_);
}

absl::StatusOr<std::unique_ptr<RecordLog>> RecordLog::Open(
    const std::string& path, LogRecordType type,
    const std::function<void(std::string_view payload)>& on_record) {
  const int fd = ::open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0600);
  if (fd < 0) return ErrnoError("cannot open metric log", path);
  struct stat st;
  if (::fstat(fd, &st) != 0) {
    ::close(fd);
    return ErrnoError("cannot stat metric log", path);
  }
  LogFile file(fd, st.st_size);
  LogDamage damage;
  int64_t records = 0;
  int64_t good_end = 0;
  const std::string header = Header(type);
  const std::string stored(file.At(0, kLogHeaderBytes));  // a copy: later reads move the window
  if (!stored.empty()) {
    const HeaderState state = ClassifyHeader(stored.data(), type);
    if (state == HeaderState::kOtherType ||
        (state == HeaderState::kDamaged &&
         !LooksLikeDamagedLog(stored, type, file.RecordAt(kLogHeaderBytes).has_value()))) {
      absl::Status s = state == HeaderState::kOtherType
                           ? OtherTypeError(path, stored.data(), type)
                           : ForeignFileError(path);
      ::close(fd);
      return s;
    }
    if (state == HeaderState::kDamaged) {
      // The header is fixed bytes: rewrite it and keep the (CRC-checked) records after it.
      if (::pwrite(fd, header.data(), header.size(), 0) != static_cast<ssize_t>(header.size())) {
        ::close(fd);
        return ErrnoError("cannot repair the header of metric log", path);
      }
      damage.header_repaired = true;
      spdlog::warn("metric log {}: the header was damaged and has been rewritten", path);
    }
    const ScanEnd end = ScanRecords(file, kLogHeaderBytes, &damage,
                                    [&](std::string_view payload, int64_t) {
      ++records;
      if (on_record) on_record(payload);
      return true;
    });
    good_end = end.next_offset;
    damage.torn_tail_bytes = end.tail_bytes;
  }
  if (good_end == 0) {
    // New file, or one whose header was never completely written: start it afresh.
    if (::ftruncate(fd, 0) != 0 ||
        ::pwrite(fd, header.data(), header.size(), 0) != static_cast<ssize_t>(header.size())) {
      ::close(fd);
      return ErrnoError("cannot write metric log header", path);
    }
    good_end = kLogHeaderBytes;
  } else if (st.st_size > good_end) {
    // Only bytes with no intact record after them: an append the crash cut short.
    spdlog::warn("metric log {}: dropping a torn tail of {} bytes after {} intact records", path,
                 st.st_size - good_end, records);
    if (::ftruncate(fd, good_end) != 0) {
      ::close(fd);
      return ErrnoError("cannot truncate the torn tail of metric log", path);
    }
  }
  if (damage.damaged_regions > 0) {
    spdlog::warn("metric log {}: skipped {} damaged bytes in {} places (first at offset {}); "
                 "the {} intact records around them are kept",
                 path, damage.damaged_bytes, damage.damaged_regions,
                 damage.first_damaged_offset, records);
  }
  if (::lseek(fd, good_end, SEEK_SET) != good_end) {
    ::close(fd);
    return ErrnoError("cannot seek in metric log", path);
  }
  return std::unique_ptr<RecordLog>(new RecordLog(path, fd, records, damage));
}

absl::Status RecordLog::Append(const std::string& payload) {
  if (payload.size() > kMaxLogRecordBytes) {
    return absl::InvalidArgumentError(absl::StrCat("record of ", payload.size(),
                                                   " bytes exceeds the log's limit of ",
                                                   kMaxLogRecordBytes));
  }
  std::string frame(kFrameBytes, '\0');
  PutU32(static_cast<uint32_t>(payload.size()), frame.data());
  uint32_t crc = Crc32c(frame.data(), 4);
  crc = Crc32c(payload.data(), payload.size(), crc);
  PutU32(crc, frame.data() + 4);
  frame += payload;

  absl::MutexLock lock(&mu_);
  const off_t start = ::lseek(fd_, 0, SEEK_CUR);
  size_t done = 0;
  while (done < frame.size()) {
    const ssize_t n = ::write(fd_, frame.data() + done, frame.size() - done);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) {
      absl::Status err = ErrnoError("cannot append to metric log", path_);
      // Take back a partial record so that later appends stay readable.
      if (start >= 0 && ::ftruncate(fd_, start) == 0) ::lseek(fd_, start, SEEK_SET);
      return err;
    }
    done += static_cast<size_t>(n);
  }
  ++records_;
  return absl::OkStatus();
}

int64_t RecordLog::record_count() const {
  absl::MutexLock lock(&mu_);
  return records_;
}

absl::StatusOr<LogRead<fp8d::v1::MetricRecord>> ReadMetricLog(const std::string& path,
                                                              int64_t from_seq,
                                                              int64_t from_step,
                                                              int64_t offset,
                                                              size_t max_records) {
  return ReadLog<fp8d::v1::MetricRecord>(
      path, LogRecordType::kMetric, offset, max_records, [&](const fp8d::v1::MetricRecord& r) {
        return r.seq() >= from_seq && MetricRecordStep(r) >= from_step;
      });
}

absl::StatusOr<LogRead<fp8d::v1::AmaxRecord>> ReadAmaxLog(const std::string& path,
                                                          int64_t from_step, int64_t offset,
                                                          size_t max_records) {
  return ReadLog<fp8d::v1::AmaxRecord>(
      path, LogRecordType::kAmax, offset, max_records,
      [&](const fp8d::v1::AmaxRecord& r) { return r.step() >= from_step; });
}

MetricLog::MetricLog(std::unique_ptr<RecordLog> metrics, std::unique_ptr<RecordLog> amax)
    : metrics_(std::move(metrics)), amax_(std::move(amax)) {}

absl::StatusOr<std::unique_ptr<MetricLog>> MetricLog::Open(const std::string& dir,
                                                           bool skip_logged_steps) {
  std::error_code ec;
  std::filesystem::create_directories(dir, ec);
  if (ec) {
    return absl::InternalError(absl::StrCat("cannot create metric log directory ", dir, ": ",
                                            ec.message()));
  }
  int64_t next_seq = 0, max_step = 0, max_eval = -1, max_amax = 0, max_any = 0;
  auto metrics = RecordLog::Open(
      (std::filesystem::path(dir) / kMetricLogFile).string(), LogRecordType::kMetric,
      [&](std::string_view payload) {
        fp8d::v1::MetricRecord r;
        if (!r.ParseFromArray(payload.data(), static_cast<int>(payload.size()))) return;
        next_seq = std::max(next_seq, r.seq() + 1);
        max_any = std::max(max_any, MetricRecordStep(r));
        if (r.has_step()) max_step = std::max(max_step, r.step().step());
        if (r.has_eval()) max_eval = std::max(max_eval, r.eval().step());
      });
  if (!metrics.ok()) return metrics.status();
  auto amax = RecordLog::Open(
      (std::filesystem::path(dir) / kAmaxLogFile).string(), LogRecordType::kAmax,
      [&](std::string_view payload) {
        fp8d::v1::AmaxRecord r;
        if (r.ParseFromArray(payload.data(), static_cast<int>(payload.size()))) {
          max_amax = std::max(max_amax, r.step());
        }
      });
  if (!amax.ok()) return amax.status();
  auto log = std::unique_ptr<MetricLog>(new MetricLog(*std::move(metrics), *std::move(amax)));
  log->skip_logged_steps_ = skip_logged_steps;
  absl::MutexLock lock(&log->seq_mu_);
  log->next_seq_ = next_seq;
  log->max_step_ = max_step;
  log->max_eval_step_ = max_eval;
  log->max_amax_step_ = max_amax;
  log->max_any_step_ = max_any;
  return log;
}

bool MetricLog::AlreadyLogged(const fp8d::v1::MetricRecord& record) const {
  if (!skip_logged_steps_) return false;
  absl::MutexLock lock(&seq_mu_);
  if (record.has_step()) return record.step().step() <= max_step_;
  if (record.has_eval()) return record.eval().step() <= max_eval_step_;
  return false;
}

bool MetricLog::AlreadyLogged(const fp8d::v1::AmaxRecord& record) const {
  if (!skip_logged_steps_) return false;
  absl::MutexLock lock(&seq_mu_);
  return record.step() <= max_amax_step_;
}

int64_t MetricLog::last_logged_step() const {
  absl::MutexLock lock(&seq_mu_);
  return max_any_step_;
}

absl::StatusOr<int64_t> MetricLog::AppendMetric(fp8d::v1::MetricRecord* record) {
  absl::MutexLock lock(&seq_mu_);
  const int64_t seq = next_seq_;
  record->set_seq(seq);
  if (record->unix_micros() == 0) record->set_unix_micros(absl::ToUnixMicros(absl::Now()));
  absl::Status s = metrics_->Append(record->SerializeAsString());
  if (!s.ok()) return s;
  ++next_seq_;
  max_any_step_ = std::max(max_any_step_, MetricRecordStep(*record));
  if (record->has_step()) max_step_ = std::max(max_step_, record->step().step());
  if (record->has_eval()) max_eval_step_ = std::max(max_eval_step_, record->eval().step());
  return seq;
}

absl::Status MetricLog::AppendAmax(const fp8d::v1::AmaxRecord& record) {
  absl::Status s = amax_->Append(record.SerializeAsString());
  if (!s.ok()) return s;
  absl::MutexLock lock(&seq_mu_);
  max_amax_step_ = std::max(max_amax_step_, record.step());
  return s;
}

void MetricLog::OnMetric(const fp8d::v1::MetricRecord& record) {
  if (AlreadyLogged(record)) return;
  fp8d::v1::MetricRecord copy = record;
  absl::StatusOr<int64_t> seq = AppendMetric(&copy);
  if (!seq.ok()) {
    spdlog::error("{}", seq.status().ToString());
    absl::MutexLock lock(&status_mu_);
    if (status_.ok()) status_ = seq.status();
  }
}

void MetricLog::OnAmax(const fp8d::v1::AmaxRecord& record) {
  if (AlreadyLogged(record)) return;
  absl::Status s = AppendAmax(record);
  if (!s.ok()) {
    spdlog::error("{}", s.ToString());
    absl::MutexLock lock(&status_mu_);
    if (status_.ok()) status_ = s;
  }
}

absl::Status MetricLog::status() const {
  absl::MutexLock lock(&status_mu_);
  return status_;
}

}  // namespace fp8d
