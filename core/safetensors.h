// The safetensors file format (https://github.com/huggingface/safetensors): an 8-byte little-endian
// header length, a JSON header {"name": {"dtype": "F32", "shape": [...], "data_offsets": [b, e]},
// "__metadata__": {"k": "v"}} padded with spaces so the data starts 8-byte aligned, then the data.
// fp8d writes F32 only, tensors in name order (deterministic bytes); it reads F32, BF16 and F16.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "core/tensor_map.h"

namespace fp8d {

// INVALID_ARGUMENT when a tensor's data size disagrees with its shape or a name is reserved.
absl::StatusOr<std::string> SerializeSafetensors(const TensorMap& tensors,
                                                 const std::map<std::string, std::string>& metadata);

struct SafetensorsFile {
  TensorMap tensors;
  std::map<std::string, std::string> metadata;
};
// DATA_LOSS for malformed bytes (short file, bad header length or JSON, offsets that do not tile
// the data section); INVALID_ARGUMENT for a dtype other than F32, BF16, F16.
absl::StatusOr<SafetensorsFile> ParseSafetensors(std::string_view bytes);

// Lower-level pieces, for writers that stream data to a file and readers that only need the header.
struct SafetensorsEntry {
  std::string name;
  std::string dtype;            // "F32", "BF16", "F16" (others are rejected when parsed)
  std::vector<int64_t> shape;
  int64_t begin = 0;            // byte offsets into the data section
  int64_t end = 0;
};
struct SafetensorsHeader {
  std::vector<SafetensorsEntry> entries;   // in data-offset order
  std::map<std::string, std::string> metadata;
  int64_t data_offset = 0;                 // 8 + JSON length: where the data section starts
};

// The 8-byte length prefix plus the padded JSON header for `tensors` stored as F32 in name
// order. The data section that must follow is the tensors' float bytes, concatenated in the
// same order (see AppendSafetensorsData).
absl::StatusOr<std::string> SerializeSafetensorsHeader(
    const TensorMap& tensors, const std::map<std::string, std::string>& metadata);
// Size of the data section in bytes.
int64_t SafetensorsDataBytes(const TensorMap& tensors);

// Parses `prefix` = the first 8 bytes plus the JSON header (more bytes are ignored).
// `file_size` (the whole file's size) checks that the offsets tile the data section exactly.
absl::StatusOr<SafetensorsHeader> ParseSafetensorsHeader(std::string_view prefix,
                                                         int64_t file_size);
// Reads the header length from the first 8 bytes (DATA_LOSS when implausible for `file_size`).
absl::StatusOr<int64_t> SafetensorsHeaderLength(std::string_view first8, int64_t file_size);

}  // namespace fp8d
