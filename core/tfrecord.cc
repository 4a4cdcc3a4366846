#include "core/tfrecord.h"

#include <fstream>
#include <sstream>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "core/crc32c.h"

namespace fp8d {
namespace {

void PutLittleEndian(uint64_t v, int bytes, std::string* out) {
  for (int i = 0; i < bytes; ++i) out->push_back(static_cast<char>((v >> (8 * i)) & 0xFF));
}

uint64_t GetLittleEndian(const char* in, int bytes) {
  uint64_t v = 0;
  for (int i = 0; i < bytes; ++i) {
    v |= static_cast<uint64_t>(static_cast<unsigned char>(in[i])) << (8 * i);
  }
  return v;
}

}  // namespace

std::string FrameTfRecord(absl::string_view data) {
  std::string out;
  out.reserve(data.size() + kTfRecordOverheadBytes);
  PutLittleEndian(data.size(), 8, &out);
  PutLittleEndian(MaskCrc32c(Crc32c(out.data(), 8)), 4, &out);
  out.append(data.data(), data.size());
  PutLittleEndian(MaskCrc32c(Crc32c(data.data(), data.size())), 4, &out);
  return out;
}

absl::StatusOr<TfRecordRead> ParseTfRecords(absl::string_view bytes) {
  TfRecordRead read;
  size_t pos = 0;
  while (pos < bytes.size()) {
    if (bytes.size() - pos < 12) {
      read.torn_tail = true;
      break;
    }
    const char* header = bytes.data() + pos;
    if (static_cast<uint32_t>(GetLittleEndian(header + 8, 4)) !=
        MaskCrc32c(Crc32c(header, 8))) {
      return absl::DataLossError(absl::StrCat("TFRecord at byte ", pos,
                                              ": the length field fails its CRC-32C"));
    }
    const uint64_t length = GetLittleEndian(header, 8);
    if (length > bytes.size() - pos - 12 || bytes.size() - pos - 12 - length < 4) {
      read.torn_tail = true;
      break;
    }
    const absl::string_view data = bytes.substr(pos + 12, length);
    const uint32_t stored = static_cast<uint32_t>(GetLittleEndian(data.data() + length, 4));
    if (stored != MaskCrc32c(Crc32c(data.data(), data.size()))) {
      return absl::DataLossError(
          absl::StrCat("TFRecord at byte ", pos, ": the data fails its CRC-32C"));
    }
    read.records.emplace_back(data);
    pos += 12 + length + 4;
  }
  return read;
}

absl::StatusOr<TfRecordRead> ReadTfRecordFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return absl::NotFoundError(absl::StrCat("`", path, "` cannot be read"));
  std::stringstream bytes;
  bytes << in.rdbuf();
  auto read = ParseTfRecords(bytes.str());
  if (!read.ok()) {
    return absl::Status(read.status().code(), absl::StrCat(path, ": ", read.status().message()));
  }
  return read;
}

}  // namespace fp8d
