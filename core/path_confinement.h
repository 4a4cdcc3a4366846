// Keeps user-supplied paths (data.train, data.val, tokenizers, models to import, checkpoints)
// inside a configured root directory, so a job spec cannot read or write files elsewhere on the
// daemon's machine, nor learn which files exist outside the root.
#pragma once

#include <string>
#include <string_view>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace fp8d {

// Resolves `path` against `root` the way the kernel would open it, one component at a time:
// relative paths start at root, absolute ones at "/"; every symlink is followed (at most
// kMaxSymlinkHops) and "." / ".." are applied to the resolved prefix, so `nope/../link/x` and
// `link/../../x` resolve exactly as open() would. The walk never looks at a file outside root:
// as soon as the resolved prefix leaves root (other than passing through root's own ancestors),
// the answer is PERMISSION_DENIED naming `field`, the path and the root, and never the target,
// whether or not it exists. Components after the first missing one are kept as written; they
// may not contain "..", which open() could never resolve (INVALID_ARGUMENT).
// Returns the absolute resolved path (no symlinks in its existing prefix). Empty root = no
// confinement (local runs): the path is returned unchanged. An empty path is INVALID_ARGUMENT.
// Used for every path a job names; `field` is the spec field ("data.train").
absl::StatusOr<std::string> ConfinePath(const std::string& root, const std::string& path,
                                        absl::string_view field = "path");

inline constexpr int kMaxSymlinkHops = 40;  // as Linux's MAXSYMLINKS

}  // namespace fp8d
