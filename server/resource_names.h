// Resource names of the API: `jobs/{job}` and `jobs/{job}/checkpoints/{checkpoint}`. Ids are
// validated here so no name can reach the file system with a separator or "..".
#pragma once

#include <string>
#include "absl/strings/string_view.h"

#include "absl/status/statusor.h"

namespace fp8d {

// Ids: 1..64 of [A-Za-z0-9._-], not starting with '.'.
bool IsValidId(absl::string_view id);

// Accepts `jobs/{job}`; INVALID_ARGUMENT naming `field` otherwise.
absl::StatusOr<std::string> ParseJobName(absl::string_view name, absl::string_view field = "name");

struct CheckpointName {
  std::string job;
  std::string checkpoint;  // empty for `jobs/{job}` (= the latest checkpoint)
};
// Accepts `jobs/{job}/checkpoints/{checkpoint}` and, when `allow_job_only`, `jobs/{job}`.
absl::StatusOr<CheckpointName> ParseCheckpointName(absl::string_view name, bool allow_job_only);

std::string JobName(absl::string_view job_id);
std::string CheckpointResourceName(absl::string_view job_id, absl::string_view checkpoint_id);

// A job id derived from the spec's name ("demo" -> "demo-3"): invalid characters become '-'.
std::string MakeJobId(absl::string_view spec_name, int64_t seq);

}  // namespace fp8d
