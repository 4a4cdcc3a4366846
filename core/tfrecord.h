// TFRecord framing, the container of TensorBoard event files (and of TensorFlow's record files):
//
//   uint64 length (little-endian)
//   uint32 masked CRC-32C of the 8 length bytes
//   length bytes of data (here: one serialized tensorboard.Event)
//   uint32 masked CRC-32C of the data
//
// Writing and reading live here once; the event files of core/tensorboard_writer.h and the tests
// that read them back both go through these functions.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace fp8d {

inline constexpr int64_t kTfRecordOverheadBytes = 16;  // length, its CRC, the data's CRC

// One framed record: the bytes to append to the file.
std::string FrameTfRecord(absl::string_view data);

struct TfRecordRead {
  std::vector<std::string> records;
  // Bytes after the last whole record that do not form a record yet (a writer mid-append).
  bool torn_tail = false;
};
// Every record of `bytes`. DATA_LOSS naming the byte offset when a whole record fails its CRC:
// unlike a short tail, that is corruption rather than a write in progress.
absl::StatusOr<TfRecordRead> ParseTfRecords(absl::string_view bytes);
// The same for a file; NOT_FOUND when it cannot be read.
absl::StatusOr<TfRecordRead> ReadTfRecordFile(const std::string& path);

}  // namespace fp8d
