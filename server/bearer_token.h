// Bearer-token authentication: the daemon reads one token from --token-file and every call must
// carry `authorization: Bearer <token>` metadata. The comparison takes the same time whatever
// the first mismatching byte, so response timing does not leak the token.
#pragma once

#include <string>
#include "absl/strings/string_view.h"

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace fp8d {

// Reads the token: the file's first line, surrounding whitespace trimmed. NOT_FOUND when the
// file cannot be read; PERMISSION_DENIED naming the mode when its group or others have any
// access (a token others can read is no secret); INVALID_ARGUMENT when the token is shorter
// than kMinTokenLength.
absl::StatusOr<std::string> ReadTokenFile(const std::string& path);
inline constexpr size_t kMinTokenLength = 16;

// Constant-time in the length of `expected`.
bool TokensEqual(absl::string_view expected, absl::string_view given);

// Checks an `authorization` metadata value ("Bearer <token>") against `expected`.
// UNAUTHENTICATED with a message that never echoes either token.
absl::Status CheckBearer(absl::string_view expected, bool present, absl::string_view header);

}  // namespace fp8d
