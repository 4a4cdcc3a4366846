#include "core/metric_log.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "spdlog/spdlog.h"

namespace fp8d {
namespace {

constexpr char kMagic[8] = {'f', 'p', '8', 'd', 'l', 'o', 'g', '\0'};
constexpr uint32_t kLogFormatVersion = 1;
constexpr int64_t kFrameBytes = 8;  // length + CRC

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

absl::Status CheckHeader(const std::string& path, const char* header, LogRecordType type) {
  if (std::memcmp(header, kMagic, sizeof(kMagic)) != 0) {
    return absl::DataLossError(absl::StrCat(path, ": not an fp8d log (bad magic)"));
  }
  const uint32_t version = GetU32(header + 8);
  if (version != kLogFormatVersion) {
    return absl::DataLossError(absl::StrCat(path, ": log format version ", version,
                                            " is not supported (this build reads ",
                                            kLogFormatVersion, ")"));
  }
  const uint32_t stored = GetU32(header + 12);
  if (stored != static_cast<uint32_t>(type)) {
    return absl::DataLossError(absl::StrCat(path, ": holds record type ", stored,
                                            ", expected ", static_cast<uint32_t>(type), " (",
                                            TypeName(type), ")"));
  }
  return absl::OkStatus();
}

// Walks the intact records of an open log from `offset`, calling `fn(payload)` for each; returns
// the offset after the last intact record. Stops at EOF, a short read or a CRC mismatch.
template <typename Fn>
int64_t ScanRecords(std::ifstream& in, int64_t offset, bool* torn, Fn&& fn) {
  in.clear();
  in.seekg(offset);
  std::string payload;
  *torn = false;
  while (true) {
    char frame[kFrameBytes];
    in.read(frame, kFrameBytes);
    const std::streamsize got = in.gcount();
    if (got == 0) break;
    if (got < kFrameBytes) {
      *torn = true;
      break;
    }
    const uint32_t len = GetU32(frame);
    if (len > kMaxLogRecordBytes) {
      *torn = true;
      break;
    }
    payload.resize(len);
    in.read(payload.data(), len);
    if (in.gcount() < static_cast<std::streamsize>(len)) {
      *torn = true;
      break;
    }
    uint32_t crc = Crc32c(frame, 4);
    crc = Crc32c(payload.data(), payload.size(), crc);
    if (crc != GetU32(frame + 4)) {
      *torn = true;
      break;
    }
    if (!fn(payload)) {
      offset += kFrameBytes + len;
      break;
    }
    offset += kFrameBytes + len;
  }
  return offset;
}

absl::Status ErrnoError(const std::string& what, const std::string& path) {
  return absl::InternalError(absl::StrCat(what, " ", path, ": ", std::strerror(errno)));
}

template <typename Record, typename Keep>
absl::StatusOr<LogRead<Record>> ReadLog(const std::string& path, LogRecordType type,
                                        int64_t offset, size_t max_records, Keep&& keep) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return absl::NotFoundError(absl::StrCat("metric log ", path, " does not exist"));
  char header[kLogHeaderBytes];
  in.read(header, kLogHeaderBytes);
  LogRead<Record> out;
  if (in.gcount() < kLogHeaderBytes) {
    // A log whose creation was interrupted: nothing in it yet.
    out.next_offset = 0;
    out.torn_tail = in.gcount() > 0;
    return out;
  }
  absl::Status s = CheckHeader(path, header, type);
  if (!s.ok()) return s;
  if (offset < kLogHeaderBytes) offset = kLogHeaderBytes;
  bool parse_failed = false;
  out.next_offset = ScanRecords(in, offset, &out.torn_tail, [&](const std::string& payload) {
    Record r;
    if (!r.ParseFromString(payload)) {
      parse_failed = true;
      return false;
    }
    if (keep(r)) out.records.push_back(std::move(r));
    return max_records == 0 || out.records.size() < max_records;
  });
  if (parse_failed) {
    return absl::DataLossError(absl::StrCat(path, ": a record with a valid checksum is not a ",
                                            TypeName(type)));
  }
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

RecordLog::RecordLog(std::string path, int fd, int64_t records)
    : path_(std::move(path)), fd_(fd), records_(records) {}

RecordLog::~RecordLog() {
  absl::MutexLock lock(&mu_);
  if (fd_ >= 0) ::close(fd_);
}

absl::StatusOr<std::unique_ptr<RecordLog>> RecordLog::Open(const std::string& path,
                                                           LogRecordType type) {
  int64_t records = 0;
  int64_t good_end = 0;
  std::error_code ec;
  const bool exists = std::filesystem::exists(path, ec);
  if (exists) {
    std::ifstream in(path, std::ios::binary);
    if (!in) return absl::PermissionDeniedError(absl::StrCat("cannot read metric log ", path));
    char header[kLogHeaderBytes];
    in.read(header, kLogHeaderBytes);
    if (in.gcount() == kLogHeaderBytes) {
      absl::Status s = CheckHeader(path, header, type);
      if (!s.ok()) return s;
      bool torn = false;
      good_end = ScanRecords(in, kLogHeaderBytes, &torn, [&](const std::string&) {
        ++records;
        return true;
      });
    }
  }

  const int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_CLOEXEC, 0644);
  if (fd < 0) return ErrnoError("cannot open metric log", path);
  struct stat st;
  if (::fstat(fd, &st) != 0) {
    ::close(fd);
    return ErrnoError("cannot stat metric log", path);
  }
  if (good_end == 0) {
    // New file, or one whose header was never completely written: start it afresh.
    const std::string header = Header(type);
    if (::ftruncate(fd, 0) != 0 ||
        ::pwrite(fd, header.data(), header.size(), 0) != static_cast<ssize_t>(header.size())) {
      ::close(fd);
      return ErrnoError("cannot write metric log header", path);
    }
    good_end = kLogHeaderBytes;
  } else if (st.st_size > good_end) {
    spdlog::warn("metric log {}: dropping a torn tail of {} bytes after {} intact records", path,
                 st.st_size - good_end, records);
    if (::ftruncate(fd, good_end) != 0) {
      ::close(fd);
      return ErrnoError("cannot truncate the torn tail of metric log", path);
    }
  }
  if (::lseek(fd, good_end, SEEK_SET) != good_end) {
    ::close(fd);
    return ErrnoError("cannot seek in metric log", path);
  }
  return std::unique_ptr<RecordLog>(new RecordLog(path, fd, records));
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

absl::StatusOr<std::unique_ptr<MetricLog>> MetricLog::Open(const std::string& dir) {
  std::error_code ec;
  std::filesystem::create_directories(dir, ec);
  if (ec) {
    return absl::InternalError(absl::StrCat("cannot create metric log directory ", dir, ": ",
                                            ec.message()));
  }
  auto metrics = RecordLog::Open((std::filesystem::path(dir) / kMetricLogFile).string(),
                                 LogRecordType::kMetric);
  if (!metrics.ok()) return metrics.status();
  auto amax =
      RecordLog::Open((std::filesystem::path(dir) / kAmaxLogFile).string(), LogRecordType::kAmax);
  if (!amax.ok()) return amax.status();
  return std::unique_ptr<MetricLog>(new MetricLog(*std::move(metrics), *std::move(amax)));
}

absl::StatusOr<int64_t> MetricLog::AppendMetric(fp8d::v1::MetricRecord* record) {
  absl::MutexLock lock(&seq_mu_);
  const int64_t seq = metrics_->record_count();
  record->set_seq(seq);
  if (record->unix_micros() == 0) record->set_unix_micros(absl::ToUnixMicros(absl::Now()));
  absl::Status s = metrics_->Append(record->SerializeAsString());
  if (!s.ok()) return s;
  return seq;
}

absl::Status MetricLog::AppendAmax(const fp8d::v1::AmaxRecord& record) {
  return amax_->Append(record.SerializeAsString());
}

void MetricLog::OnMetric(const fp8d::v1::MetricRecord& record) {
  fp8d::v1::MetricRecord copy = record;
  absl::StatusOr<int64_t> seq = AppendMetric(&copy);
  if (!seq.ok()) {
    spdlog::error("{}", seq.status().ToString());
    absl::MutexLock lock(&status_mu_);
    if (status_.ok()) status_ = seq.status();
  }
}

void MetricLog::OnAmax(const fp8d::v1::AmaxRecord& record) {
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
