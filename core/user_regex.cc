#include "core/user_regex.h"

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"

namespace fp8d {

absl::StatusOr<std::unique_ptr<const RE2>> CompileUserRegex(std::string_view pattern,
                                                            std::string_view field_view) {
  const std::string field(field_view);
  if (pattern.size() > kMaxUserRegexBytes) {
    return absl::InvalidArgumentError(absl::StrCat(field, " is a regex of ", pattern.size(),
                                                   " bytes: allowed at most ",
                                                   kMaxUserRegexBytes));
  }
  RE2::Options options;
  options.set_log_errors(false);  // the error goes back to the user, not to stderr
  options.set_max_mem(kUserRegexMaxMem);
  auto re = std::make_unique<const RE2>(re2::StringPiece(pattern.data(), pattern.size()), options);
  if (re->ok()) return re;
  const std::string shown(pattern.substr(0, 80));  // the start names it well enough
  const char* more = pattern.size() > 80 ? "..." : "";
  if (re->error_code() == RE2::ErrorPatternTooLarge) {
    return absl::InvalidArgumentError(
        absl::StrCat(field, " = \"", shown, more, "\" is too large once compiled (RE2 limit ",
                     kUserRegexMaxMem, " bytes): use a simpler pattern"));
  }
  return absl::InvalidArgumentError(absl::StrCat(field, " = \"", shown, more,
                                                 "\" is not a valid RE2 regex: ", re->error()));
}

bool FullMatch(const RE2& re, std::string_view text) {
  return RE2::FullMatch(re2::StringPiece(text.data(), text.size()), re);
}

bool PartialMatch(const RE2& re, std::string_view text) {
  return RE2::PartialMatch(re2::StringPiece(text.data(), text.size()), re);
}

}  // namespace fp8d
