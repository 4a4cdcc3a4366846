#include "client/bash_completion.h"

#include <vector>

#include "CLI/CLI.hpp"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"

namespace fp8d::client {
namespace {

// Options whose value is a path.
constexpr char kFileOptions[] = "--token-file|--tls-ca|--out";

struct Command {
  std::string path;                 // "" for the top level, "recipe set", ...
  std::vector<std::string> words;   // subcommands and long options to offer
  bool takes_job = false;
  bool takes_file = false;
};

void Collect(const CLI::App& app, const std::string& path, std::vector<Command>* out) {
  Command c;
  c.path = path;
  for (const CLI::App* sub : app.get_subcommands({})) c.words.push_back(sub->get_name());
  for (const CLI::Option* o : app.get_options()) {
    for (const std::string& name : o->get_lnames()) c.words.push_back("--" + name);
    const std::string positional = o->get_name(/*positional=*/true);
    if (positional == "JOB") c.takes_job = true;
    if (positional == "JOBFILE") c.takes_file = true;
  }
  out->push_back(c);
  for (const CLI::App* sub : app.get_subcommands({})) {
    Collect(*sub, path.empty() ? sub->get_name() : absl::StrCat(path, " ", sub->get_name()), out);
  }
}

}  // namespace

std::string BashCompletionScript(const CLI::App& app) {
  std::vector<Command> commands;
  Collect(app, "", &commands);
  std::vector<std::string> paths, job_paths, file_paths;
  std::string cases;
  for (const Command& c : commands) {
    if (!c.path.empty()) paths.push_back(absl::StrCat("\"", c.path, "\""));
    if (c.takes_job) job_paths.push_back(absl::StrCat("\"", c.path, "\""));
    if (c.takes_file) file_paths.push_back(absl::StrCat("\"", c.path, "\""));
    absl::StrAppend(&cases, "    \"", c.path, "\") words=\"", absl::StrJoin(c.words, " "),
                    "\" ;;\n");
  }
  return absl::StrCat(
      "# bash completion for fp8ctl. Load it with: source <(fp8ctl completion bash)\n"
      "_fp8ctl() {\n"
      "  local cur=\"${COMP_WORDS[COMP_CWORD]}\" prev=\"${COMP_WORDS[COMP_CWORD-1]}\"\n"
      "  local path=\"\" w i words\n"
      "  for ((i = 1; i < COMP_CWORD; i++)); do\n"
      "    w=\"${COMP_WORDS[i]}\"\n"
      "    case \"${path:+$path }$w\" in\n"
      "      ", absl::StrJoin(paths, "|"), ") path=\"${path:+$path }$w\" ;;\n"
      "    esac\n"
      "  done\n"
      "  case \"$prev\" in\n"
      "    ", kFileOptions, ") COMPREPLY=($(compgen -f -- \"$cur\")); return ;;\n"
      "  esac\n"
      "  case \"$path\" in\n", cases,
      "  esac\n"
      "  if [[ \"$cur\" != -* ]]; then\n"
      "    case \"$path\" in\n"
      "      ", file_paths.empty() ? "\"-\"" : absl::StrJoin(file_paths, "|"),
      ") COMPREPLY=($(compgen -f -- \"$cur\")); return ;;\n"
      "      ", job_paths.empty() ? "\"-\"" : absl::StrJoin(job_paths, "|"),
      ") words=\"$words $(timeout 2 \"${COMP_WORDS[0]}\" jobs -q 2>/dev/null)\" ;;\n"
      "    esac\n"
      "  fi\n"
      "  COMPREPLY=($(compgen -W \"$words\" -- \"$cur\"))\n"
      "}\n"
      "complete -F _fp8ctl fp8ctl\n");
}

}  // namespace fp8d::client
