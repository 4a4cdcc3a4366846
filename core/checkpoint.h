// fp8d checkpoints: ONE safetensors file holding the engine state (TensorMap) plus
// metadata["fp8d"] = CheckpointMetadata as JSON and metadata["fp8d.data_sha256"] = SHA-256 hex of
// the data section, verified on read so bit rot and truncation are detected before any state is
// loaded. One file means one atomic rename and one hash for pulls.
#pragma once

#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "core/tensor_map.h"
#include "fp8d/v1/checkpoint.pb.h"

namespace fp8d {

inline constexpr int kCheckpointFormatVersion = 1;
inline constexpr char kCheckpointMetadataKey[] = "fp8d";
inline constexpr char kCheckpointDataShaKey[] = "fp8d.data_sha256";

// Atomic write: temp file in the same dir, write, fsync, rename, fsync the directory. Missing
// parent directories are created. A failed write leaves no temp file and no partial `path`.
// meta.format_version 0 is written as kCheckpointFormatVersion.
absl::Status WriteCheckpoint(const std::string& path, const TensorMap& tensors,
                             const fp8d::v1::CheckpointMetadata& meta);

struct LoadedCheckpoint {
  TensorMap tensors;
  fp8d::v1::CheckpointMetadata meta;
};
// NOT_FOUND when `path` is missing or not a regular file; DATA_LOSS naming the file and the
// reason for anything malformed or failing the hash; FAILED_PRECONDITION for a newer format.
absl::StatusOr<LoadedCheckpoint> ReadCheckpoint(const std::string& path);
// Header only (no data read, no hash check): cheap listing of a checkpoint directory.
absl::StatusOr<fp8d::v1::CheckpointMetadata> ReadCheckpointMetadata(const std::string& path);

}  // namespace fp8d
