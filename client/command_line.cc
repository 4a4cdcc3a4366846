#include "client/command_line.h"

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "client/fp8d_client.h"

namespace fp8d::client {
namespace {

// Options that take a value; every other --name is a boolean flag from kFlags.
const std::set<std::string>& ValueOptions() {
  static const auto* kOptions = new std::set<std::string>{
      "--addr", "--token-file", "--tls-ca", "--set", "--from-step", "--history-len", "--algo",
      "--margin", "--format", "--layer", "--out", "--amax", "--request-id"};
  return *kOptions;
}
const std::set<std::string>& Flags() {
  static const auto* kFlags = new std::set<std::string>{
      "--json", "--tls", "--watch", "--csv", "--checkpoint-first", "--follow", "--help"};
  return *kFlags;
}

}  // namespace

std::string CommandLine::Get(const std::string& name, const std::string& fallback) const {
  auto [begin, end] = options.equal_range(name);
  std::string value = fallback;
  for (auto it = begin; it != end; ++it) value = it->second;
  return value;
}

std::vector<std::string> CommandLine::GetAll(const std::string& name) const {
  std::vector<std::string> out;
  auto [begin, end] = options.equal_range(name);
  for (auto it = begin; it != end; ++it) out.push_back(it->second);
  return out;
}

absl::StatusOr<CommandLine> ParseCommandLine(const std::vector<std::string>& args,
                                             const std::string& env_addr,
                                             const std::string& env_token_file) {
  CommandLine cl;
  for (size_t i = 0; i < args.size(); ++i) {
    std::string arg = args[i];
    if (!absl::StartsWith(arg, "--") || arg == "--") {
      cl.positional.push_back(arg);
      continue;
    }
    std::string value;
    bool inline_value = false;
    if (auto eq = arg.find('='); eq != std::string::npos) {
      value = arg.substr(eq + 1);
      arg = arg.substr(0, eq);
      inline_value = true;
    }
    if (ValueOptions().count(arg)) {
      if (!inline_value) {
        if (i + 1 >= args.size()) {
          return absl::InvalidArgumentError(absl::StrCat("option ", arg, " needs a value"));
        }
        value = args[++i];
      }
      cl.options.emplace(arg, value);
    } else if (Flags().count(arg) && !inline_value) {
      cl.flags.insert(arg);
    } else {
      return absl::InvalidArgumentError(absl::StrCat("unknown option ", arg, "; see fp8ctl --help"));
    }
  }
  cl.addr = cl.Get("--addr", env_addr.empty() ? kDefaultAddress : env_addr);
  cl.token_file = cl.Get("--token-file", env_token_file);
  cl.json = cl.Has("--json");
  cl.tls = cl.Has("--tls") || cl.options.count("--tls-ca") > 0;
  cl.tls_ca = cl.Get("--tls-ca");
  return cl;
}

std::string UsageText() {
  return R"(usage: fp8ctl [--addr HOST:PORT] [--token-file F] [--tls] [--tls-ca F] [--json] COMMAND

Defaults: --addr from $FP8D_ADDR (else 127.0.0.1:7070), --token-file from $FP8D_TOKEN_FILE.

commands:
  info                                   daemon version, device, supported recipes, queue
  submit JOBFILE [--set key=value]... [--request-id ID] [--watch]
  jobs                                   every job with state and progress
  show JOB                               one job in detail
  watch JOB [--from-step N]              live view; Ctrl-C detaches (the job keeps running)
  recipe get JOB
  recipe set JOB RECIPE [--history-len N] [--algo max|most_recent] [--margin M]
                        [--format hybrid|e4m3] [--amax keep|reset] [--checkpoint-first]
  amax JOB [--layer REGEX] [--csv] [--from-step N] [--follow]
  checkpoint save JOB
  checkpoint list JOB
  checkpoint pull JOB [CHECKPOINT] --out PATH
  pause JOB | resume JOB | cancel JOB

With --json every result is JSON; streams print one JSON object per line.
)";
}

}  // namespace fp8d::client
