// llm.c token shards (.bin): a header of 256 little-endian int32 (magic, version, token count,
// then zeros) followed by the tokens. Magic 20240520 = GPT-2 style uint16 tokens (version 1),
// 20240801 = uint32 tokens (version 7), as written by llm.c's dev/data scripts.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/types/span.h"

namespace fp8d {

inline constexpr int kTokenShardHeaderInts = 256;
inline constexpr int64_t kTokenShardHeaderBytes = kTokenShardHeaderInts * 4;
inline constexpr int32_t kTokenShardMagicU16 = 20240520;
inline constexpr int32_t kTokenShardMagicU32 = 20240801;
inline constexpr int32_t kTokenShardVersionU16 = 1;
inline constexpr int32_t kTokenShardVersionU32 = 7;

enum class TokenWidth { kU16, kU32 };

// The bytes of a shard holding `tokens` (each must fit the width; checked).
std::string SerializeTokenShard(absl::Span<const int32_t> tokens, TokenWidth width);
absl::Status WriteTokenShard(const std::string& path, absl::Span<const int32_t> tokens,
                             TokenWidth width);

// Appends the shard's tokens to `out`. `name` is used in messages. INVALID_ARGUMENT for a bad
// magic or version, DATA_LOSS when the size disagrees with the header's token count, or a uint32
// token does not fit int32.
absl::Status ParseTokenShard(std::string_view bytes, const std::string& name,
                             std::vector<int32_t>* out);
// Checks a shard's header (its first kTokenShardHeaderBytes, or all of `header` when the file is
// shorter) against the file's size, with the errors of ParseTokenShard, without reading tokens.
absl::Status CheckTokenShardHeader(std::string_view header, int64_t file_size,
                                   const std::string& name);
// Reads `path` and appends its tokens; NOT_FOUND when it cannot be opened.
absl::Status ReadTokenShard(const std::string& path, std::vector<int32_t>* out);

}  // namespace fp8d
