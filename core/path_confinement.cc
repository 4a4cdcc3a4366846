#include "core/path_confinement.h"

#include <filesystem>
#include <system_error>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"

namespace fp8d {
namespace fs = std::filesystem;

namespace {

// True when every component of `root` is a leading component of `path` (both canonical).
bool IsWithin(const fs::path& path, const fs::path& root) {
  auto p = path.begin();
  for (auto r = root.begin(); r != root.end(); ++r, ++p) {
    // A trailing separator shows up as an empty final component; it constrains nothing.
    if (r->empty() && std::next(r) == root.end()) return true;
    if (p == path.end() || *p != *r) return false;
  }
  return true;
}

}  // namespace

absl::StatusOr<std::string> ConfinePath(const std::string& root, const std::string& path) {
  if (path.empty()) return absl::InvalidArgumentError("path is empty");
  if (root.empty()) return path;

  std::error_code ec;
  const fs::path root_abs = fs::absolute(root, ec);
  if (ec) return absl::InvalidArgumentError(absl::StrCat("bad root '", root, "': ", ec.message()));
  const fs::path root_canon = fs::weakly_canonical(root_abs, ec);
  if (ec) return absl::InvalidArgumentError(absl::StrCat("bad root '", root, "': ", ec.message()));

  fs::path joined(path);
  if (joined.is_relative()) joined = root_canon / joined;
  // weakly_canonical resolves symlinks in the existing prefix and ".." lexically in the rest, so
  // neither a symlink pointing out nor a not-yet-existing "../x" can escape.
  const fs::path canon = fs::weakly_canonical(joined, ec);
  if (ec) return absl::InvalidArgumentError(absl::StrCat("bad path '", path, "': ", ec.message()));

  if (!IsWithin(canon, root_canon)) {
    return absl::PermissionDeniedError(absl::StrCat("path '", path, "' resolves to '", canon.string(),
                                                    "', outside the root '", root_canon.string(),
                                                    "'"));
  }
  return canon.string();
}

}  // namespace fp8d
