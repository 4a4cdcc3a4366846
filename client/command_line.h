// fp8ctl's command line: global flags (--addr, --token-file, --json, --tls, --tls-ca) anywhere,
// then the command words, positional arguments and the command's own options.
#pragma once

#include <map>
#include <set>
#include <string>
#include <vector>

#include "absl/status/statusor.h"

namespace fp8d::client {

struct CommandLine {
  std::string addr;                      // from --addr, else $FP8D_ADDR, else the default
  std::string token_file;                // from --token-file, else $FP8D_TOKEN_FILE
  bool json = false;
  bool tls = false;
  std::string tls_ca;
  std::vector<std::string> positional;   // command words and their arguments
  std::multimap<std::string, std::string> options;  // --name value (repeatable)
  std::set<std::string> flags;           // --name without a value

  bool Has(const std::string& flag) const { return flags.count(flag) > 0; }
  // The last value of an option, or `fallback`.
  std::string Get(const std::string& name, const std::string& fallback = "") const;
  std::vector<std::string> GetAll(const std::string& name) const;
};

// INVALID_ARGUMENT naming an unknown option or one missing its value. `env_addr` and
// `env_token_file` are the values of $FP8D_ADDR / $FP8D_TOKEN_FILE (empty when unset).
absl::StatusOr<CommandLine> ParseCommandLine(const std::vector<std::string>& args,
                                             const std::string& env_addr,
                                             const std::string& env_token_file);

// Usage text listing every command.
std::string UsageText();

}  // namespace fp8d::client
