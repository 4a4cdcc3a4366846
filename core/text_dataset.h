// Plain text with the built-in byte-level tokenizer: every byte is one token (vocab 256), so any
// UTF-8 text trains without a tokenizer file and loss / ln 2 is bits per byte.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"

namespace fp8d {

inline constexpr int kByteVocabSize = 256;

// Appends one token per byte of `text`.
void ByteTokenize(std::string_view text, std::vector<int32_t>* out);
// Inverse of ByteTokenize; tokens outside [0, 256) become '?'.
std::string ByteDetokenize(const std::vector<int32_t>& tokens);
// Reads the whole file and appends its bytes as tokens; NOT_FOUND when it cannot be opened.
absl::Status ReadTextTokens(const std::string& path, std::vector<int32_t>* out);

// Reads a whole file into a string (NOT_FOUND when missing or not a regular file).
absl::Status ReadFileBytes(const std::string& path, std::string* out);

}  // namespace fp8d
