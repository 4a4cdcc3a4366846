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
  const int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
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
  return WriteFileAtomically((fs::path(dir) / "job.json").string(), json);
}

std::vector<fp8d::v1::JobRecord> JobStore::LoadAll(std::vector<std::string>* errors) const {
  std::vector<fp8d::v1::JobRecord> records;
  std::error_code ec;
  for (const auto& entry : fs::directory_iterator(fs::path(state_dir_) / "jobs", ec)) {
    if (!entry.is_directory() || !IsValidId(entry.path().filename().string())) continue;
    const fs::path file = entry.path() / "job.json";
    if (!fs::exists(file)) continue;
    std::ifstream in(file);
    std::stringstream text;
    text << in.rdbuf();
    fp8d::v1::JobRecord record;
    google::protobuf::util::JsonParseOptions options;
    options.ignore_unknown_fields = true;  // records written by a newer daemon still load
    auto s = google::protobuf::util::JsonStringToMessage(text.str(), &record, options);
    if (!s.ok() || record.job().name() != JobName(entry.path().filename().string())) {
      errors->push_back(absl::StrCat(file.string(), ": ",
                                     s.ok() ? "name does not match its folder" : s.ToString()));
      continue;
    }
    records.push_back(std::move(record));
  }
  std::sort(records.begin(), records.end(), [](const auto& a, const auto& b) {
    return a.queue_seq() < b.queue_seq();
  });
  return records;
}

}  // namespace fp8d
