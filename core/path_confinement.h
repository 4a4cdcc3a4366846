// Keeps user-supplied data and checkpoint paths inside a configured root directory, so a job spec
// cannot read or write files elsewhere on the daemon's machine.
#pragma once

#include <string>

#include "absl/status/statusor.h"

namespace fp8d {

// Resolves `path` against `root` (relative paths join root; absolute paths must lie inside root after
// resolving "..", symlinks via weakly_canonical). PERMISSION_DENIED naming the path and the root otherwise.
// Empty root = no confinement (local runs). An empty path is INVALID_ARGUMENT.
absl::StatusOr<std::string> ConfinePath(const std::string& root, const std::string& path);

}  // namespace fp8d
