// Regular expressions that come from users (a recipe's policy.include/exclude, StreamAmax's
// layer filter) are compiled here with RE2: matching takes time linear in the input and memory
// bounded by the options below whatever the pattern, so no pattern can crash or wedge a process
// (std::regex recurses per nesting level and backtracks exponentially on `(.*)*!`).
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string_view>

#include "absl/status/statusor.h"
#include "re2/re2.h"

namespace fp8d {

// Longest pattern accepted. Layer names are short ("layers.31.mlp.gate_up"), so this is plenty,
// and it bounds nesting depth and the parse work done before RE2's own limits apply.
inline constexpr size_t kMaxUserRegexBytes = 1024;
// Memory RE2 may use for one compiled pattern (program and DFA caches).
inline constexpr int64_t kUserRegexMaxMem = int64_t{1} << 20;

// INVALID_ARGUMENT naming `field` ("recipe.policy.include[0]") and saying what is wrong: too
// long, not valid RE2 syntax, or too large once compiled.
absl::StatusOr<std::unique_ptr<const RE2>> CompileUserRegex(std::string_view pattern,
                                                            std::string_view field);

// Whole-string match (policy include/exclude) and partial match (the layer filter, like grep).
bool FullMatch(const RE2& re, std::string_view text);
bool PartialMatch(const RE2& re, std::string_view text);

}  // namespace fp8d
