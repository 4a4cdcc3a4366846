#include "core/token_shard.h"

#include <bit>
#include <cstdio>
#include <cstring>
#include <limits>
#include <memory>

#include "absl/base/internal/raw_logging.h"
#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "core/text_dataset.h"

namespace fp8d {
namespace {

static_assert(std::endian::native == std::endian::little,
              "token shards are little-endian; a big-endian host needs byte swaps here");

int32_t LoadI32(const char* p) {
  int32_t v;
  std::memcpy(&v, p, 4);
  return v;
}

}  // namespace

std::string SerializeTokenShard(absl::Span<const int32_t> tokens, TokenWidth width) {
  const int64_t token_bytes = width == TokenWidth::kU16 ? 2 : 4;
  std::string out(kTokenShardHeaderBytes + token_bytes * static_cast<int64_t>(tokens.size()), '\0');
  int32_t header[3] = {width == TokenWidth::kU16 ? kTokenShardMagicU16 : kTokenShardMagicU32,
                       width == TokenWidth::kU16 ? kTokenShardVersionU16 : kTokenShardVersionU32,
                       static_cast<int32_t>(tokens.size())};
  ABSL_RAW_CHECK(tokens.size() <= static_cast<size_t>(std::numeric_limits<int32_t>::max()),
                 "a shard's token count is an int32");
  std::memcpy(out.data(), header, sizeof(header));
  char* p = out.data() + kTokenShardHeaderBytes;
  for (int32_t t : tokens) {
    ABSL_RAW_CHECK(t >= 0, "token ids are non-negative");
    if (width == TokenWidth::kU16) {
      ABSL_RAW_CHECK(t <= 0xFFFF, "token does not fit uint16");
      const uint16_t v = static_cast<uint16_t>(t);
      std::memcpy(p, &v, 2);
    } else {
      const uint32_t v = static_cast<uint32_t>(t);
      std::memcpy(p, &v, 4);
    }
    p += token_bytes;
  }
  return out;
}

absl::Status WriteTokenShard(const std::string& path, absl::Span<const int32_t> tokens,
                             TokenWidth width) {
  const std::string bytes = SerializeTokenShard(tokens, width);
  std::unique_ptr<FILE, int (*)(FILE*)> f(std::fopen(path.c_str(), "wb"), &std::fclose);
  if (!f) return absl::ErrnoToStatus(errno, absl::StrCat("cannot create ", path));
  if (std::fwrite(bytes.data(), 1, bytes.size(), f.get()) != bytes.size() ||
      std::fflush(f.get()) != 0) {
    return absl::ErrnoToStatus(errno, absl::StrCat("cannot write ", path));
  }
  return absl::OkStatus();
}

absl::Status CheckTokenShardHeader(std::string_view bytes, int64_t file_size,
                                   const std::string& name) {
  if (file_size < kTokenShardHeaderBytes ||
      static_cast<int64_t>(bytes.size()) < kTokenShardHeaderBytes) {
    return absl::DataLossError(absl::StrCat("token shard ", name, " is truncated: ", file_size,
                                            " bytes, shorter than the ", kTokenShardHeaderBytes,
                                            "-byte header"));
  }
  const int32_t magic = LoadI32(bytes.data());
  const int32_t version = LoadI32(bytes.data() + 4);
  const int32_t count = LoadI32(bytes.data() + 8);
  int64_t token_bytes = 0;
  int32_t want_version = 0;
  if (magic == kTokenShardMagicU16) {
    token_bytes = 2;
    want_version = kTokenShardVersionU16;
  } else if (magic == kTokenShardMagicU32) {
    token_bytes = 4;
    want_version = kTokenShardVersionU32;
  } else {
    return absl::InvalidArgumentError(absl::StrCat(
        "token shard ", name, " has bad magic ", magic, "; expected ", kTokenShardMagicU16,
        " (uint16 tokens) or ", kTokenShardMagicU32, " (uint32 tokens)"));
  }
  if (version != want_version) {
    return absl::InvalidArgumentError(absl::StrCat("token shard ", name, " has version ", version,
                                                   "; magic ", magic, " requires version ",
                                                   want_version));
  }
  if (count < 0) {
    return absl::DataLossError(
        absl::StrCat("token shard ", name, " has a negative token count ", count));
  }
  const int64_t want_size = kTokenShardHeaderBytes + token_bytes * count;
  if (file_size != want_size) {
    return absl::DataLossError(absl::StrCat(
        "token shard ", name, " is ", file_size, " bytes but its header says ", count,
        " tokens of ", token_bytes, " bytes = ", want_size, " bytes",
        file_size < want_size ? " (truncated)" : " (trailing bytes)"));
  }
  return absl::OkStatus();
}

absl::Status ParseTokenShard(std::string_view bytes, const std::string& name,
                             std::vector<int32_t>* out) {
  if (absl::Status s = CheckTokenShardHeader(bytes, static_cast<int64_t>(bytes.size()), name);
      !s.ok()) {
    return s;
  }
  const int32_t count = LoadI32(bytes.data() + 8);
  const int64_t token_bytes = LoadI32(bytes.data()) == kTokenShardMagicU16 ? 2 : 4;
  const char* p = bytes.data() + kTokenShardHeaderBytes;
  out->reserve(out->size() + count);
  for (int32_t i = 0; i < count; ++i, p += token_bytes) {
    if (token_bytes == 2) {
      uint16_t v;
      std::memcpy(&v, p, 2);
      out->push_back(v);
    } else {
      uint32_t v;
      std::memcpy(&v, p, 4);
      if (v > static_cast<uint32_t>(std::numeric_limits<int32_t>::max())) {
        return absl::DataLossError(
            absl::StrCat("token shard ", name, ": token ", v, " at index ", i, " exceeds int32"));
      }
      out->push_back(static_cast<int32_t>(v));
    }
  }
  return absl::OkStatus();
}

absl::Status ReadTokenShard(const std::string& path, std::vector<int32_t>* out) {
  std::string bytes;
  if (absl::Status s = ReadFileBytes(path, &bytes); !s.ok()) return s;
  return ParseTokenShard(bytes, path, out);
}

}  // namespace fp8d
