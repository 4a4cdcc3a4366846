// JobRegistry::Delete: a job that has ended leaves the registry and the state dir. The job's
// folder is first renamed to a hidden name (atomic: a crash leaves the job either listed with all
// its files or gone), then removed; Load() removes folders a crash left half-deleted.
#include <filesystem>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "server/job_registry.h"
#include "server/resource_names.h"
#include "spdlog/spdlog.h"

namespace fp8d {
namespace fs = std::filesystem;
namespace v1 = fp8d::v1;

namespace {

constexpr char kDeletedPrefix[] = ".deleted-";

bool HasEnded(v1::JobState s) {
  return s == v1::SUCCEEDED || s == v1::FAILED || s == v1::CANCELLED;
}

int64_t TreeBytes(const fs::path& dir) {
  int64_t bytes = 0;
  std::error_code ec;
  for (auto it = fs::recursive_directory_iterator(dir, ec); !ec && it != fs::end(it);
       it.increment(ec)) {
    std::error_code size_ec;
    if (it->is_regular_file(size_ec)) bytes += static_cast<int64_t>(it->file_size(size_ec));
  }
  return bytes;
}

}  // namespace

absl::StatusOr<v1::DeleteJobResponse> JobRegistry::Delete(const std::string& name) {
  fs::path trash;
  std::string job_name;
  {
    absl::MutexLock lock(&mu_);
    auto found = Find(name);
    if (!found.ok()) return found.status();
    const v1::Job& job = (*found)->record.job();
    job_name = job.name();
    if (!HasEnded(job.state())) {
      return absl::FailedPreconditionError(absl::StrCat(
          "job ", job_name, " is ", v1::JobState_Name(job.state()),
          ": only SUCCEEDED, FAILED or CANCELLED jobs can be deleted (cancel it first)"));
    }
    // A job waiting to start from one of its checkpoints still needs them.
    for (const auto& [other_id, other] : jobs_) {
      const v1::Job& o = other.record.job();
      if (!HasEnded(o.state()) && absl::StartsWith(o.continued_from(), job_name + "/")) {
        return absl::FailedPreconditionError(absl::StrCat(
            "job ", job_name, " cannot be deleted: ", o.name(), " (",
            v1::JobState_Name(o.state()), ") continues from its checkpoint ",
            o.continued_from()));
      }
    }
    const std::string id = job_name.substr(std::string("jobs/").size());
    const fs::path dir = store_.JobDir(id);
    trash = dir.parent_path() / absl::StrCat(kDeletedPrefix, id, "-",
                                             absl::ToUnixMicros(absl::Now()));
    std::error_code ec;
    fs::rename(dir, trash, ec);
    if (ec) {
      return absl::InternalError(absl::StrCat("cannot remove the folder of ", job_name, " (",
                                              dir.string(), "): ", ec.message()));
    }
    if (!(*found)->record.request_id().empty()) {
      by_request_id_.erase((*found)->record.request_id());
    }
    (*found)->feeds->metrics.Close();
    (*found)->feeds->amax.Close();
    jobs_.erase(id);
    changed_.SignalAll();
  }
  // Outside the lock: removing a large job's checkpoints takes a while.
  v1::DeleteJobResponse response;
  response.set_name(job_name);
  response.set_freed_bytes(TreeBytes(trash));
  std::error_code ec;
  fs::remove_all(trash, ec);
  if (ec) spdlog::warn("{}: removing {}: {}", job_name, trash.string(), ec.message());
  spdlog::info("{}: deleted ({} bytes)", job_name, response.freed_bytes());
  return response;
}

void JobRegistry::RemoveDeletedJobDirs() {
  const fs::path jobs_dir = fs::path(store_.JobDir("x")).parent_path();
  std::error_code ec;
  for (const auto& entry : fs::directory_iterator(jobs_dir, ec)) {
    if (!absl::StartsWith(entry.path().filename().string(), kDeletedPrefix)) continue;
    std::error_code remove_ec;
    fs::remove_all(entry.path(), remove_ec);
    spdlog::info("state dir: removed {} left by an interrupted delete", entry.path().string());
  }
}

}  // namespace fp8d
