#include "server/checkpoint_catalog.h"

#include <algorithm>
#include <filesystem>
#include <fstream>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "core/checkpoint.h"
#include "core/sha256.h"
#include "server/resource_names.h"

namespace fp8d {
namespace fs = std::filesystem;

std::vector<fp8d::v1::Checkpoint> CheckpointCatalog::List(const std::string& job_id,
                                                          const std::string& dir) {
  std::vector<fp8d::v1::Checkpoint> out;
  std::error_code ec;
  for (const auto& entry : fs::directory_iterator(dir, ec)) {
    const std::string file = entry.path().filename().string();
    if (!entry.is_regular_file() || !absl::EndsWith(file, kCheckpointSuffix)) continue;
    const std::string id = file.substr(0, file.size() - std::string(kCheckpointSuffix).size());
    if (!IsValidId(id)) continue;
    auto described = Describe(job_id, entry.path().string());
    if (described.ok()) out.push_back(*std::move(described));
  }
  std::sort(out.begin(), out.end(), [](const auto& a, const auto& b) {
    return std::make_tuple(a.step(), a.name()) < std::make_tuple(b.step(), b.name());
  });
  return out;
}

absl::StatusOr<std::string> CheckpointCatalog::Resolve(const std::string& job_id,
                                                       const std::string& dir,
                                                       const std::string& checkpoint_id) {
  if (checkpoint_id.empty()) {
    auto all = List(job_id, dir);
    if (all.empty()) {
      return absl::NotFoundError(absl::StrCat(JobName(job_id), " has no checkpoints yet"));
    }
    const std::string& name = all.back().name();
    return (fs::path(dir) / absl::StrCat(name.substr(name.rfind('/') + 1), kCheckpointSuffix))
        .string();
  }
  const std::string path = (fs::path(dir) / absl::StrCat(checkpoint_id, kCheckpointSuffix)).string();
  std::error_code ec;
  if (!fs::is_regular_file(path, ec)) {
    return absl::NotFoundError(absl::StrCat("checkpoint ",
                                            CheckpointResourceName(job_id, checkpoint_id),
                                            " not found"));
  }
  return path;
}

absl::StatusOr<fp8d::v1::Checkpoint> CheckpointCatalog::Describe(const std::string& job_id,
                                                                 const std::string& path) {
  auto meta = ReadCheckpointMetadata(path);
  if (!meta.ok()) return meta.status();
  auto sha = Sha256(path);
  if (!sha.ok()) return sha.status();
  std::error_code ec;
  fp8d::v1::Checkpoint c;
  std::string file = fs::path(path).filename().string();
  c.set_name(CheckpointResourceName(
      job_id, file.substr(0, file.size() - std::string(kCheckpointSuffix).size())));
  c.set_step(meta->step());
  c.set_size_bytes(static_cast<int64_t>(fs::file_size(path, ec)));
  c.set_sha256(*sha);
  c.set_create_unix_micros(meta->unix_micros());
  c.set_recipe_version(meta->recipe_version());
  return c;
}

absl::StatusOr<std::string> CheckpointCatalog::PullSha256(const std::string& path) {
  absl::StatusOr<std::string> recorded = ReadRecordedSha256(path);
  if (recorded.ok() || !absl::IsNotFound(recorded.status())) return recorded;
  if (absl::Status s = VerifyCheckpoint(path); !s.ok()) return s;
  return Sha256(path);
}

absl::StatusOr<std::string> CheckpointCatalog::Sha256(const std::string& path) {
  absl::StatusOr<std::string> recorded = ReadRecordedSha256(path);
  if (recorded.ok() || !absl::IsNotFound(recorded.status())) return recorded;
  std::error_code ec;
  const auto size = static_cast<int64_t>(fs::file_size(path, ec));
  if (ec) return absl::NotFoundError(absl::StrCat("checkpoint file `", path, "` not found"));
  const auto mtime = static_cast<int64_t>(fs::last_write_time(path, ec).time_since_epoch().count());
  const Key key{path, size, mtime};
  {
    absl::MutexLock lock(&mu_);
    if (auto it = sha_cache_.find(key); it != sha_cache_.end()) return it->second;
  }
  auto sha = Sha256File(path);
  if (!sha.ok()) return sha.status();
  absl::MutexLock lock(&mu_);
  sha_cache_[key] = *sha;
  return *sha;
}

absl::StatusOr<std::string> ReadFileRange(const std::string& path, int64_t offset,
                                          int64_t max_bytes) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return absl::NotFoundError(absl::StrCat("checkpoint file `", path, "` not found"));
  in.seekg(0, std::ios::end);
  const int64_t size = in.tellg();
  if (offset < 0 || offset > size) {
    return absl::OutOfRangeError(
        absl::StrCat("offset ", offset, " is outside the checkpoint: allowed 0..", size));
  }
  const int64_t n = std::min(max_bytes, size - offset);
  std::string data(static_cast<size_t>(n), '\0');
  in.seekg(offset);
  in.read(data.data(), n);
  if (in.gcount() != n) {
    return absl::DataLossError(absl::StrCat("short read from `", path, "` at offset ", offset));
  }
  return data;
}

}  // namespace fp8d
