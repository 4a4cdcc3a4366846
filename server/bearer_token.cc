#include "server/bearer_token.h"

#include <sys/stat.h>

#include <fstream>
#include <sstream>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"

namespace fp8d {

absl::StatusOr<std::string> ReadTokenFile(const std::string& path) {
  struct stat st;
  if (::stat(path.c_str(), &st) != 0) {
    return absl::NotFoundError(absl::StrCat("--token-file `", path, "` cannot be read"));
  }
  if ((st.st_mode & (S_IRWXG | S_IRWXO)) != 0) {
    return absl::PermissionDeniedError(absl::StrFormat(
        "--token-file `%s` has mode %04o: other users can read or change the token; "
        "allowed: readable by its owner only (chmod 600 %s)",
        path, st.st_mode & 07777, path));
  }
  std::ifstream in(path);
  if (!in) return absl::NotFoundError(absl::StrCat("--token-file `", path, "` cannot be read"));
  std::string line;
  std::getline(in, line);
  std::string token(absl::StripAsciiWhitespace(line));
  if (token.size() < kMinTokenLength) {
    return absl::InvalidArgumentError(absl::StrCat("--token-file `", path, "`: token has ",
                                                   token.size(), " characters, at least ",
                                                   kMinTokenLength, " required"));
  }
  return token;
}

bool TokensEqual(absl::string_view expected, absl::string_view given) {
  // Walk all of `expected` whatever `given` holds; fold every difference into one byte.
  unsigned char diff = expected.size() == given.size() ? 0 : 1;
  for (size_t i = 0; i < expected.size(); ++i) {
    const unsigned char g = i < given.size() ? static_cast<unsigned char>(given[i]) : 0;
    diff |= static_cast<unsigned char>(expected[i]) ^ g;
  }
  return diff == 0;
}

absl::Status CheckBearer(absl::string_view expected, bool present, absl::string_view header) {
  if (!present) {
    return absl::UnauthenticatedError(
        "missing `authorization` metadata: this daemon requires `Bearer <token>`");
  }
  constexpr absl::string_view kScheme = "Bearer ";
  if (!absl::StartsWithIgnoreCase(header, kScheme)) {
    return absl::UnauthenticatedError("`authorization` metadata must be `Bearer <token>`");
  }
  if (!TokensEqual(expected, header.substr(kScheme.size()))) {
    return absl::UnauthenticatedError("invalid bearer token");
  }
  return absl::OkStatus();
}

}  // namespace fp8d
