// fp8d checkpoints: ONE safetensors file holding the engine state (TensorMap) plus
// metadata["fp8d"] = CheckpointMetadata as JSON and metadata["fp8d.sha256"] = the content hash:
// SHA-256 over everything the file means (every other metadata entry, every tensor's name,
// dtype, shape and offsets, and the data section), verified on every read so bit rot, truncation
// and edits of the header (step, data position, ...) are detected before any state is loaded.
// Beside it, `<file>.sha256` (sha256sum format) records the SHA-256 of the file's bytes as they
// were written: listings show it and pulls are checked against it.
// Format 1 files (hash of the data section only, "fp8d.data_sha256") are still read.
#pragma once

#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "core/tensor_map.h"
#include "fp8d/v1/checkpoint.pb.h"

namespace fp8d {

inline constexpr int kCheckpointFormatVersion = 2;
inline constexpr char kCheckpointMetadataKey[] = "fp8d";
inline constexpr char kCheckpointContentShaKey[] = "fp8d.sha256";
inline constexpr char kCheckpointDataShaKey[] = "fp8d.data_sha256";  // format 1
inline constexpr char kCheckpointShaSuffix[] = ".sha256";
// Fault injection for tests: when this environment variable holds a number of milliseconds,
// every checkpoint write pauses that long after writing its data and before its fsync and
// rename, so a test can kill a process inside a write.
inline constexpr char kCheckpointWriteDelayVariable[] = "FP8D_CHECKPOINT_WRITE_DELAY_MS";

// Atomic write: temp file in the same dir, write, fsync, rename, fsync the directory; the
// `.sha256` record is written (atomically) just before the rename, so a checkpoint never exists
// without it. Missing parent directories are created. A failed write leaves no temp file and no
// partial `path`. meta.format_version 0 is written as kCheckpointFormatVersion. Returns the
// SHA-256 (hex) of the file's bytes.
absl::StatusOr<std::string> WriteCheckpoint(const std::string& path, const TensorMap& tensors,
                                            const fp8d::v1::CheckpointMetadata& meta);

// The SHA-256 recorded in `<path>.sha256` when the file was written; NOT_FOUND when there is no
// record (a checkpoint written before records existed), DATA_LOSS when it is malformed.
absl::StatusOr<std::string> ReadRecordedSha256(const std::string& path);

// Checks a checkpoint's content hash (as ReadCheckpoint does) without converting its tensors.
absl::Status VerifyCheckpoint(const std::string& path);

// Removes what interrupted writes in `dir` left behind: temp files of processes that no longer
// run, and `.sha256` records whose checkpoint was never renamed into place. Returns how many
// files were removed.
int RemoveStaleCheckpointFiles(const std::string& dir);

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
