#include "server/resource_names.h"

#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"

namespace fp8d {
namespace {

constexpr size_t kMaxIdLength = 64;
constexpr char kIdRule[] = "1..64 characters of [A-Za-z0-9._-], not starting with '.'";

bool IsIdChar(char c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
         c == '.' || c == '_' || c == '-';
}

}  // namespace

bool IsValidId(absl::string_view id) {
  if (id.empty() || id.size() > kMaxIdLength || id.front() == '.') return false;
  for (char c : id) {
    if (!IsIdChar(c)) return false;
  }
  return true;
}

absl::StatusOr<std::string> ParseJobName(absl::string_view name, absl::string_view field) {
  std::vector<absl::string_view> parts = absl::StrSplit(name, '/');
  if (parts.size() != 2 || parts[0] != "jobs") {
    return absl::InvalidArgumentError(
        absl::StrCat(field, " `", name, "` must be jobs/{job}"));
  }
  if (!IsValidId(parts[1])) {
    return absl::InvalidArgumentError(
        absl::StrCat(field, " `", name, "`: job id must be ", kIdRule));
  }
  return std::string(parts[1]);
}

absl::StatusOr<CheckpointName> ParseCheckpointName(absl::string_view name, bool allow_job_only) {
  std::vector<absl::string_view> parts = absl::StrSplit(name, '/');
  const bool job_only = parts.size() == 2 && allow_job_only;
  if (!(job_only || (parts.size() == 4 && parts[2] == "checkpoints")) || parts[0] != "jobs") {
    return absl::InvalidArgumentError(absl::StrCat(
        "name `", name, "` must be jobs/{job}/checkpoints/{checkpoint}",
        allow_job_only ? " or jobs/{job} (latest)" : ""));
  }
  CheckpointName out;
  out.job = std::string(parts[1]);
  if (!IsValidId(out.job)) {
    return absl::InvalidArgumentError(
        absl::StrCat("name `", name, "`: job id must be ", kIdRule));
  }
  if (!job_only) {
    out.checkpoint = std::string(parts[3]);
    if (!IsValidId(out.checkpoint)) {
      return absl::InvalidArgumentError(
          absl::StrCat("name `", name, "`: checkpoint id must be ", kIdRule));
    }
  }
  return out;
}

std::string JobName(absl::string_view job_id) { return absl::StrCat("jobs/", job_id); }

std::string CheckpointResourceName(absl::string_view job_id, absl::string_view checkpoint_id) {
  return absl::StrCat("jobs/", job_id, "/checkpoints/", checkpoint_id);
}

std::string MakeJobId(absl::string_view spec_name, int64_t seq) {
  std::string base;
  for (char c : spec_name) {
    if (base.size() >= 40) break;
    base.push_back(IsIdChar(c) ? c : '-');
  }
  while (!base.empty() && base.front() == '.') base.erase(base.begin());
  if (base.empty()) base = "job";
  return absl::StrCat(base, "-", seq);
}

}  // namespace fp8d
