#include "core/path_confinement.h"

#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <deque>
#include <filesystem>
#include <system_error>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"

namespace fp8d {
namespace fs = std::filesystem;

namespace {

// Path components of an absolute, symlink-free path ("/a/b" -> {"a", "b"}).
std::vector<std::string> Components(const std::string& absolute) {
  std::vector<std::string> out;
  for (absl::string_view part : absl::StrSplit(absolute, '/', absl::SkipEmpty())) {
    out.emplace_back(part);
  }
  return out;
}

std::string Join(const std::vector<std::string>& parts) {
  std::string out;
  for (const std::string& p : parts) absl::StrAppend(&out, "/", p);
  return out.empty() ? "/" : out;
}

// `prefix` is inside root (root itself included) or an ancestor of root, the only places the
// walk may look at.
bool InsideOrAbove(const std::vector<std::string>& prefix, const std::vector<std::string>& root) {
  const size_t n = std::min(prefix.size(), root.size());
  for (size_t i = 0; i < n; ++i) {
    if (prefix[i] != root[i]) return false;
  }
  return true;
}
bool Inside(const std::vector<std::string>& prefix, const std::vector<std::string>& root) {
  return prefix.size() >= root.size() && InsideOrAbove(prefix, root);
}

void PushFront(absl::string_view path, std::deque<std::string>* pending) {
  std::vector<std::string> parts;
  for (absl::string_view part : absl::StrSplit(path, '/', absl::SkipEmpty())) {
    parts.emplace_back(part);
  }
  pending->insert(pending->begin(), parts.begin(), parts.end());
}

}  // namespace

absl::StatusOr<std::string> ConfinePath(const std::string& root, const std::string& path,
                                        absl::string_view field_view) {
  const std::string field(field_view);
  if (path.empty()) return absl::InvalidArgumentError(absl::StrCat(field, " is empty"));
  if (path.find('\0') != std::string::npos) {
    return absl::InvalidArgumentError(absl::StrCat(field, " contains a NUL byte"));
  }
  if (root.empty()) return path;

  std::error_code ec;
  const fs::path root_canon = fs::canonical(fs::absolute(root, ec), ec);
  if (ec) {
    return absl::FailedPreconditionError(
        absl::StrCat("the data root `", root, "` cannot be resolved: ", ec.message()));
  }
  const std::vector<std::string> root_parts = Components(root_canon.string());
  auto outside = [&] {
    return absl::PermissionDeniedError(absl::StrCat(field, " `", path, "` leads outside the root `",
                                                    root_canon.string(), "`"));
  };

  std::vector<std::string> resolved = path[0] == '/' ? std::vector<std::string>() : root_parts;
  std::deque<std::string> pending;
  PushFront(path, &pending);
  int hops = 0;
  while (!pending.empty()) {
    std::string part = std::move(pending.front());
    pending.pop_front();
    if (part == ".") continue;
    if (part == "..") {
      if (!resolved.empty()) resolved.pop_back();
      if (!InsideOrAbove(resolved, root_parts)) return outside();
      continue;
    }
    resolved.push_back(std::move(part));
    if (!InsideOrAbove(resolved, root_parts)) return outside();
    const std::string current = Join(resolved);
    struct stat st;
    if (::lstat(current.c_str(), &st) != 0) {
      if (errno != ENOENT && errno != ENOTDIR) {
        return absl::PermissionDeniedError(absl::StrCat(field, " `", path, "`: cannot look up `",
                                                        current, "`: ", std::strerror(errno)));
      }
      // Missing: open() would fail here, so what follows cannot name anything yet. Keep it as
      // written (an output path may not exist yet) but refuse "..", which could only lead back
      // out of this missing directory by text, never by the file system.
      bool climbs = false;
      for (const std::string& rest : pending) {
        if (rest == ".") continue;
        if (rest == "..") {
          climbs = true;
          if (!resolved.empty()) resolved.pop_back();
          if (!InsideOrAbove(resolved, root_parts)) return outside();
          continue;
        }
        resolved.push_back(rest);
        if (!InsideOrAbove(resolved, root_parts)) return outside();
      }
      if (climbs) {
        return absl::InvalidArgumentError(
            absl::StrCat(field, " `", path, "` goes up (\"..\") out of `", current,
                         "`, which does not exist"));
      }
      pending.clear();
      break;
    }
    if (S_ISLNK(st.st_mode)) {
      if (++hops > kMaxSymlinkHops) {
        return absl::InvalidArgumentError(absl::StrCat(field, " `", path, "` follows more than ",
                                                       kMaxSymlinkHops, " symlinks"));
      }
      std::string target(static_cast<size_t>(st.st_size) + 1, '\0');
      const ssize_t n = ::readlink(current.c_str(), target.data(), target.size());
      if (n < 0 || static_cast<size_t>(n) >= target.size()) {
        return absl::PermissionDeniedError(
            absl::StrCat(field, " `", path, "`: cannot read the link `", current, "`"));
      }
      target.resize(static_cast<size_t>(n));
      resolved.pop_back();
      if (!target.empty() && target[0] == '/') resolved.clear();
      PushFront(target, &pending);
    }
  }
  if (!Inside(resolved, root_parts)) return outside();
  return Join(resolved);
}

}  // namespace fp8d
