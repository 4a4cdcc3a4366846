// fp8ctl's command line, parsed with CLI11: the global options (--addr, --token-file, --tls,
// --tls-ca, --json; accepted before or after the command), one subcommand per command with its
// own arguments, options and --help, `fp8ctl help COMMAND...`, --version and a bash completion
// script generated from the same definitions. A usage error names the argument that is wrong and
// where to read about the command, instead of printing every command's usage.
#pragma once

#include <cstdint>
#include <iosfwd>
#include <optional>
#include <string>
#include <vector>

namespace fp8d::client {

inline constexpr int kExitOk = 0;
inline constexpr int kExitError = 1;
inline constexpr int kExitUsage = 2;

// Everything a command line can say; each command reads the fields it defines.
struct Fp8ctlArgs {
  // Global options. addr: --addr, else $FP8D_ADDR, else the default; token_file: --token-file,
  // else $FP8D_TOKEN_FILE.
  std::string addr;
  std::string token_file;
  bool json = false;
  bool tls = false;
  std::string tls_ca;

  // The command's words: "submit", "recipe set", "checkpoint pull", ...
  std::string command;

  // Arguments.
  std::string job;                  // JOB of every per-job command
  std::vector<std::string> jobs;    // compare JOB...
  std::string job_file;             // submit
  std::string recipe;               // recipe set
  std::string checkpoint;           // checkpoint pull, continue (optional)

  // Options.
  std::vector<std::string> sets;    // --set key=value
  std::string request_id;
  bool watch = false;
  std::string from_step;            // "" (from the start), a step number, or "now"
  bool follow = false;
  bool csv = false;
  std::string layer;
  bool quiet = false;               // jobs -q: ids only
  std::optional<int> history_len;
  std::string algo;
  std::optional<int> margin;
  std::string format;
  std::string amax = "keep";
  bool checkpoint_first = false;
  std::string out;
  bool force = false;
  std::optional<int> steps;         // continue --steps
  std::string shell;                // completion SHELL
  std::vector<std::string> help_words;  // help COMMAND...
};

// Parses `args` (without the program name). Returns nullopt when the command should run, or the
// exit code when parsing already answered (--help, --version, `help`, `completion`: kExitOk on
// `out`) or failed (kExitUsage, the reason on `err`).
std::optional<int> ParseFp8ctlArgs(const std::vector<std::string>& args,
                                   const std::string& env_addr, const std::string& env_token_file,
                                   Fp8ctlArgs* parsed, std::ostream& out, std::ostream& err);

// The first step a stream should send: `from_step` as given, the job's next step for "now".
// nullopt with `error` set when it is neither a step number >= 0 nor "now".
std::optional<int64_t> ParseFromStep(const std::string& from_step, int64_t current_step,
                                     std::string* error);

}  // namespace fp8d::client
