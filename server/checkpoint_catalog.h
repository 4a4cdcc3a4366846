// The checkpoints of one job as the API shows them: listing with step, size, SHA-256 and recipe
// version, and byte ranges for pulls. The SHA-256 shown is the one recorded when the file was
// written (core/checkpoint.h); for a checkpoint without a record it is computed (and cached by
// path, size and mtime).
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <tuple>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "fp8d/v1/trainer.pb.h"

namespace fp8d {

// Pull chunks are at most this size (the gRPC default message limit is 4 MiB).
inline constexpr int64_t kMaxPullChunkBytes = 2 * 1024 * 1024;
inline constexpr char kCheckpointSuffix[] = ".safetensors";

class CheckpointCatalog {
 public:
  // Checkpoints of `job_id` in `dir`, oldest step first. Temp files and unreadable headers are
  // skipped (a checkpoint being written is not listed until it is renamed into place).
  std::vector<fp8d::v1::Checkpoint> List(const std::string& job_id, const std::string& dir);

  // Path of checkpoint `checkpoint_id`, or of the latest when empty. NOT_FOUND naming it.
  absl::StatusOr<std::string> Resolve(const std::string& job_id, const std::string& dir,
                                      const std::string& checkpoint_id);

  // Describes one checkpoint file (hash included).
  absl::StatusOr<fp8d::v1::Checkpoint> Describe(const std::string& job_id,
                                                const std::string& path);

  absl::StatusOr<std::string> Sha256(const std::string& path);

  // The hash a pull promises: the one recorded at write time, so bytes damaged on disk since
  // then fail the client's check. Without a record the file's content hash is verified first
  // (DATA_LOSS when it fails) and the file's SHA-256 computed.
  absl::StatusOr<std::string> PullSha256(const std::string& path);

 private:
  using Key = std::tuple<std::string, int64_t, int64_t>;  // path, size, mtime ns
  absl::Mutex mu_;
  std::map<Key, std::string> sha_cache_ ABSL_GUARDED_BY(mu_);
};

// Reads up to `max_bytes` from `offset`. OUT_OF_RANGE naming `offset` when beyond the end.
absl::StatusOr<std::string> ReadFileRange(const std::string& path, int64_t offset,
                                          int64_t max_bytes);

}  // namespace fp8d
