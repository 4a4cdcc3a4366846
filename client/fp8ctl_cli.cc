#include "client/fp8ctl_cli.h"

#include <functional>
#include <memory>
#include <ostream>

#include "CLI/CLI.hpp"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "client/bash_completion.h"
#include "client/fp8d_client.h"

#ifndef FP8D_VERSION
#define FP8D_VERSION "dev"
#endif

namespace fp8d::client {
namespace {

constexpr char kFromStepHelp[] =
    "first step to show: a step number, or `now` for what happens from now on (default: from "
    "the start)";

// --from-step takes a step number or `now`.
const CLI::Validator& FromStepValidator() {
  static const auto* kValidator = new CLI::Validator(
      [](std::string& value) -> std::string {
        std::string error;
        return ParseFromStep(value, 0, &error) ? "" : error;
      },
      "N|now");
  return *kValidator;
}

void AddJob(CLI::App* cmd, Fp8ctlArgs* a) {
  cmd->add_option("JOB", a->job, "job id (demo-1) or name (jobs/demo-1)")->required();
}

// The words of the selected (sub)commands: "checkpoint pull".
std::string SelectedPath(const CLI::App& app) {
  std::string path;
  const CLI::App* at = &app;
  while (true) {
    auto selected = at->get_subcommands();
    if (selected.empty()) break;
    at = selected.front();
    absl::StrAppend(&path, path.empty() ? "" : " ", at->get_name());
  }
  return path;
}

std::unique_ptr<CLI::App> BuildApp(Fp8ctlArgs* a) {
  auto app = std::make_unique<CLI::App>(
      "fp8ctl drives the fp8d training daemon: submit jobs, follow their metrics and FP8 "
      "telemetry, change the FP8 recipe of a running job, and pull checkpoints.",
      "fp8ctl");
  app->set_version_flag("--version", absl::StrCat("fp8ctl ", FP8D_VERSION));
  app->require_subcommand(0, 1);
  app->fallthrough();  // global options after the command words too
  app->add_option("--addr", a->addr,
                  absl::StrCat("daemon address HOST:PORT (default $FP8D_ADDR, else ",
                               kDefaultAddress, ")"));
  app->add_option("--token-file", a->token_file,
                  "file holding the daemon's bearer token (default $FP8D_TOKEN_FILE)");
  app->add_flag("--tls", a->tls, "connect with TLS, trusting the system's roots");
  app->add_option("--tls-ca", a->tls_ca, "connect with TLS, trusting this CA certificate");
  app->add_flag("--json", a->json,
                "JSON output: results and lists as one JSON value, streams as one object per line");
  app->footer(
      "The global options (--addr, --token-file, --tls, --tls-ca, --json) go before or after the "
      "command.\nRun `fp8ctl help COMMAND` or `fp8ctl COMMAND --help` for a command's options.");

  app->add_subcommand("info", "daemon version, device, supported recipes, queue");

  auto* submit =
      app->add_subcommand("submit", "queue a job file (YAML or JSON, parsed by the daemon)");
  submit->add_option("JOBFILE", a->job_file, "the job file")->required();
  submit->add_option("--set", a->sets, "override a field: dotted.key=value (repeatable)");
  submit->add_option("--request-id", a->request_id,
                     "idempotency key: submitting again with it returns the same job");
  submit->add_flag("--watch", a->watch, "then follow the job as `watch` does");

  auto* jobs =
      app->add_subcommand("jobs", "every job with state, progress, start and elapsed time");
  jobs->add_flag("-q,--quiet", a->quiet, "job ids only, one per line");

  AddJob(app->add_subcommand("show", "one job in detail"), a);

  auto* watch = app->add_subcommand(
      "watch", "live view: progress, loss, lr, tokens/s, recipe, events; Ctrl-C detaches");
  AddJob(watch, a);
  watch->add_option("--from-step", a->from_step, kFromStepHelp)->check(FromStepValidator());

  auto* logs = app->add_subcommand("logs", "a job's events, warnings and errors");
  AddJob(logs, a);
  logs->add_flag("-f,--follow", a->follow, "keep printing until the job ends");
  logs->add_option("--from-step", a->from_step, kFromStepHelp)->check(FromStepValidator());

  auto* compare = app->add_subcommand(
      "compare", "jobs side by side: eval loss (final, best), tokens/s, recipe history");
  compare->add_option("JOB", a->jobs, "two or more jobs")->required()->expected(1, 64);

  auto* recipe = app->add_subcommand("recipe", "the FP8 recipe of a job");
  recipe->require_subcommand(1);
  AddJob(recipe->add_subcommand("get", "active recipe, version, since which step, FP8 layers"), a);
  auto* set = recipe->add_subcommand(
      "set",
      "change the recipe of a running job; answers the version and the step it applies from");
  AddJob(set, a);
  set->add_option("RECIPE", a->recipe, "bf16, delayed, current, rowwise, blockwise or mxfp8")
      ->required();
  set->add_option("--history-len", a->history_len, "delayed: amax history length")
      ->check(CLI::Range(1, 1024));
  set->add_option("--algo", a->algo, "delayed: amax algorithm")
      ->check(CLI::IsMember({"max", "most_recent"}));
  set->add_option("--margin", a->margin, "scale margin (powers of two)")->check(CLI::Range(0, 32));
  set->add_option("--format", a->format, "FP8 formats")->check(CLI::IsMember({"hybrid", "e4m3"}));
  set->add_option("--amax", a->amax, "amax histories and scales: keep or reset")
      ->check(CLI::IsMember({"keep", "reset"}));
  set->add_flag("--checkpoint-first", a->checkpoint_first,
                "write a checkpoint at the boundary before the change");

  auto* amax = app->add_subcommand("amax", "per-tensor amax, scale, saturation and underflow");
  AddJob(amax, a);
  amax->add_option("--layer", a->layer, "only layers matching this regex (e.g. 'layers\\.0\\.')");
  amax->add_flag("--csv", a->csv, "CSV, one line per tensor and step");
  amax->add_option("--from-step", a->from_step, kFromStepHelp)->check(FromStepValidator());
  amax->add_flag("--follow", a->follow, "keep the table (or CSV) updating until the job ends");

  auto* checkpoint = app->add_subcommand("checkpoint", "save, list and pull checkpoints");
  checkpoint->require_subcommand(1);
  AddJob(checkpoint->add_subcommand("save", "save now, at the next step boundary"), a);
  AddJob(checkpoint->add_subcommand("list", "checkpoints with step, size, recipe and SHA-256"), a);
  auto* pull = checkpoint->add_subcommand(
      "pull", "download in 2 MiB chunks to PATH.partial, verify SHA-256, rename; run again to "
              "resume");
  AddJob(pull, a);
  pull->add_option("CHECKPOINT", a->checkpoint, "checkpoint id (default: the latest)");
  pull->add_option("--out", a->out, "where to write it")->required();
  pull->add_flag("--force", a->force, "overwrite PATH when it exists");

  AddJob(app->add_subcommand("pause", "pause a running job at the next step boundary"), a);
  AddJob(app->add_subcommand("resume", "resume a paused job"), a);
  AddJob(app->add_subcommand("cancel", "cancel a queued, running or paused job"), a);
  AddJob(app->add_subcommand(
             "delete", "remove a finished, failed or cancelled job with its logs and checkpoints"),
         a);

  auto* cont = app->add_subcommand(
      "continue", "a new job that goes on from a checkpoint of JOB (same spec, more steps)");
  AddJob(cont, a);
  cont->add_option("CHECKPOINT", a->checkpoint, "checkpoint id (default: the latest)");
  cont->add_option("--steps", a->steps,
                   "total steps of the new job (needed when JOB ran all its steps)")
      ->check(CLI::PositiveNumber);
  cont->add_option("--set", a->sets, "override a field: dotted.key=value (repeatable)");
  cont->add_flag("--watch", a->watch, "then follow the new job as `watch` does");

  auto* completion = app->add_subcommand(
      "completion", "print a shell completion script: source <(fp8ctl completion bash)");
  completion->add_option("SHELL", a->shell, "bash")->required()->check(CLI::IsMember({"bash"}));

  auto* help = app->add_subcommand("help", "help for a command: fp8ctl help recipe set");
  help->add_option("COMMAND", a->help_words, "command words");
  return app;
}

// The (sub)command that `words` names, or null.
CLI::App* FindCommand(CLI::App* app, const std::vector<std::string>& words) {
  CLI::App* at = app;
  for (const std::string& w : words) {
    CLI::App* next = nullptr;
    for (CLI::App* sub : at->get_subcommands({})) {
      if (sub->get_name() == w) next = sub;
    }
    if (next == nullptr) return nullptr;
    at = next;
  }
  return at;
}

}  // namespace

std::optional<int64_t> ParseFromStep(const std::string& from_step, int64_t current_step,
                                     std::string* error) {
  if (from_step.empty()) return 0;
  if (from_step == "now") return current_step + 1;
  int64_t step = 0;
  if (!absl::SimpleAtoi(from_step, &step) || step < 0) {
    *error = absl::StrCat("`", from_step, "` is not a step number >= 0 or `now`");
    return std::nullopt;
  }
  return step;
}

std::optional<int> ParseFp8ctlArgs(const std::vector<std::string>& args,
                                   const std::string& env_addr, const std::string& env_token_file,
                                   Fp8ctlArgs* parsed, std::ostream& out, std::ostream& err) {
  Fp8ctlArgs a;
  std::unique_ptr<CLI::App> app = BuildApp(&a);
  // CLI11 parses a reversed vector of arguments.
  std::vector<std::string> reversed(args.rbegin(), args.rend());
  try {
    app->parse(reversed);
  } catch (const CLI::CallForHelp&) {
    out << app->help();
    return kExitOk;
  } catch (const CLI::CallForVersion& e) {
    out << e.what() << "\n";
    return kExitOk;
  } catch (const CLI::ParseError& e) {
    const std::string path = SelectedPath(*app);
    err << "fp8ctl: " << e.what() << "\n"
        << "Run `fp8ctl " << (path.empty() ? "" : path + " ") << "--help` for "
        << (path.empty() ? "the commands" : "its arguments and options") << ".\n";
    return kExitUsage;
  }
  a.command = SelectedPath(*app);
  if (a.command.empty()) {
    err << app->help();
    return kExitUsage;
  }
  if (a.command == "help") {
    CLI::App* target = FindCommand(app.get(), a.help_words);
    if (target == nullptr) {
      err << "fp8ctl: no command `" << absl::StrJoin(a.help_words, " ")
          << "`. Run `fp8ctl --help` for the commands.\n";
      return kExitUsage;
    }
    if (a.help_words.empty()) {
      out << app->help();
      return kExitOk;
    }
    std::string prefix = "fp8ctl";  // help() appends the command's own name
    for (size_t i = 0; i + 1 < a.help_words.size(); ++i) {
      absl::StrAppend(&prefix, " ", a.help_words[i]);
    }
    out << target->help(prefix);
    return kExitOk;
  }
  if (a.command == "completion") {
    out << BashCompletionScript(*app);
    return kExitOk;
  }
  if (a.addr.empty()) a.addr = env_addr.empty() ? kDefaultAddress : env_addr;
  if (a.token_file.empty()) a.token_file = env_token_file;
  a.tls = a.tls || !a.tls_ca.empty();
  *parsed = std::move(a);
  return std::nullopt;
}

}  // namespace fp8d::client
