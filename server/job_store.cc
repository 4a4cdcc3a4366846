#include "server/job_store.h"

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "absl/strings/str_cat.h"
#include "google/protobuf/util/json_util.h"
#include "core/metric_log.h"
#include "server/resource_names.h"

namespace fp8d {
namespace fs = std::filesystem;

namespace {

absl::Status ErrnoError(const std::string& what, const std::string& path) {
  return absl::FailedPreconditionError(
      absl::StrCat(what, " `", path, "`: ", std::strerror(errno)));
}

}  // namespace

absl::Status WriteFileAtomically(const std::string& path, const std::string& contents) {
  const std::string tmp = absl::StrCat(path, ".tmp");
  const int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  if (fd < 0) return ErrnoError("cannot create", tmp);
  size_t done = 0;
  while (done < contents.size()) {
    const ssize_t n = ::write(fd, contents.data() + done, contents.size() - done);
    if (n < 0) {
      if (errno == EINTR) continue;
      ::close(fd);
      ::unlink(tmp.c_str());
      return ErrnoError("cannot write", tmp);
    }
    done += static_cast<size_t>(n);
  }
  if (::fsync(fd) != 0 || ::close(fd) != 0) {
    ::unlink(tmp.c_str());
    return ErrnoError("cannot sync", tmp);
  }
  if (::rename(tmp.c_str(), path.c_str()) != 0) {
    ::unlink(tmp.c_str());
    return ErrnoError("cannot rename into", path);
  }
  const std::string dir = fs::path(path).parent_path().string();
  const int dfd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (dfd >= 0) {
    ::fsync(dfd);
    ::close(dfd);
  }
  return absl::OkStatus();
}

JobStore::JobStore(std::string state_dir) : state_dir_(std::move(state_dir)) {}

absl::Status JobStore::Init() {
  std::error_code ec;
  fs::create_directories(fs::path(state_dir_) / "jobs", ec);
  if (ec) {
    return absl::FailedPreconditionError(
        absl::StrCat("--state-dir `", state_dir_, "` cannot be created: ", ec.message()));
  }
  const std::string probe = (fs::path(state_dir_) / ".write-probe").string();
  if (absl::Status s = WriteFileAtomically(probe, "ok\n"); !s.ok()) {
    return absl::FailedPreconditionError(
        absl::StrCat("--state-dir `", state_dir_, "` is not writable: ", s.message()));
  }
  fs::remove(probe, ec);
  for (const fs::path& dir : {fs::path(state_dir_), fs::path(state_dir_) / "jobs"}) {
    fs::permissions(dir, fs::perms::owner_all, fs::perm_options::replace, ec);
    if (ec) {
      return absl::FailedPreconditionError(
          absl::StrCat("cannot make `", dir.string(), "` private (0700): ", ec.message()));
    }
  }
  return absl::OkStatus();
}

std::string JobStore::JobDir(const std::string& job_id) const {
  return (fs::path(state_dir_) / "jobs" / job_id).string();
}
std::string JobStore::CheckpointDir(const std::string& job_id) const {
  return (fs::path(JobDir(job_id)) / "checkpoints").string();
}
std::string JobStore::MetricLogPath(const std::string& job_id) const {
  return (fs::path(JobDir(job_id)) / kMetricLogFile).string();
}
std::string JobStore::AmaxLogPath(const std::string& job_id) const {
  return (fs::path(JobDir(job_id)) / kAmaxLogFile).string();
}

absl::Status JobStore::Save(const fp8d::v1::JobRecord& record) const {
  const std::string dir = JobDir(record.job().name().substr(std::string("jobs/").size()));
  std::error_code ec;
  fs::create_directories(dir, ec);
  if (ec) {
    return absl::FailedPreconditionError(
        absl::StrCat("cannot create job dir `", dir, "`: ", ec.message()));
  }
  std::string json;
  google::protobuf::util::JsonPrintOptions options;
  options.add_whitespace = true;
  options.preserve_proto_field_names = true;
  if (auto s = google::protobuf::util::MessageToJsonString(record, &json, options); !s.ok()) {
    return absl::InternalError(absl::StrCat("cannot encode job record: ", s.ToString()));
  }
  if (absl::Status s = WriteFileAtomically((fs::path(dir) / kJobRecordFile).string(), json);
      !s.ok()) {
    return s;
  }
  return WriteFileAtomically((fs::path(dir) / kJobRecordBackupFile).string(), json);
}

namespace {

// One copy of a job's record, checked against the folder it lives in.
absl::StatusOr<fp8d::v1::JobRecord> ReadRecord(const fs::path& file, const std::string& id) {
  std::ifstream in(file, std::ios::binary);
  if (!in) return absl::NotFoundError(absl::StrCat(file.filename().string(), " is missing"));
  std::stringstream text;
  text << in.rdbuf();
  fp8d::v1::JobRecord record;
  google::protobuf::util::JsonParseOptions options;
  options.ignore_unknown_fields = true;  // records written by a newer daemon still load
  auto s = google::protobuf::util::JsonStringToMessage(text.str(), &record, options);
  if (!s.ok()) {
    return absl::DataLossError(absl::StrCat(file.filename().string(), " is not a job record: ",
                                            std::string(s.message())));
  }
  if (record.job().name() != JobName(id)) {
    return absl::DataLossError(absl::StrCat(file.filename().string(), " names `",
                                            record.job().name(), "`, not its folder's job"));
  }
  return record;
}

}  // namespace

JobStore::Loaded JobStore::LoadAll() const {
  Loaded loaded;
  std::error_code ec;
  for (const auto& entry : fs::directory_iterator(fs::path(state_dir_) / "jobs", ec)) {
    const std::string id = entry.path().filename().string();
    if (!entry.is_directory() || !IsValidId(id)) continue;
    absl::StatusOr<fp8d::v1::JobRecord> primary = ReadRecord(entry.path() / kJobRecordFile, id);
    if (primary.ok()) {
      loaded.records.push_back(*std::move(primary));
      continue;
    }
    absl::StatusOr<fp8d::v1::JobRecord> backup =
        ReadRecord(entry.path() / kJobRecordBackupFile, id);
    if (backup.ok()) {
      loaded.restored.push_back(absl::StrCat(id, ": ", primary.status().message()));
      // Put the good copy back, so the next damage finds two again.
      if (absl::Status s = Save(*backup); !s.ok()) {
        loaded.restored.back() += absl::StrCat(" (not rewritten: ", s.message(), ")");
      }
      loaded.records.push_back(*std::move(backup));
      continue;
    }
    // A folder with no record at all was never a job (a submit that failed before its first
    // write leaves none), unless it holds a job's files.
    const bool empty_folder = absl::IsNotFound(primary.status()) &&
                              absl::IsNotFound(backup.status()) &&
                              !fs::exists(entry.path() / kMetricLogFile, ec) &&
                              !fs::exists(entry.path() / "checkpoints", ec);
    if (empty_folder) continue;
    loaded.damaged.emplace_back(
        id, absl::StrCat(primary.status().message(), "; ", backup.status().message()));
  }
  std::sort(loaded.records.begin(), loaded.records.end(), [](const auto& a, const auto& b) {
    return a.queue_seq() < b.queue_seq();
  });
  return loaded;
}

}  // namespace fp8d
