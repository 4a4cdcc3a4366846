// fp8ctl: command-line client of the fp8d daemon. See `fp8ctl --help`.
#include <unistd.h>

#include <csignal>
#include <cstdlib>
#include <iostream>
#include <string>
#include <vector>

#include "client/command_line.h"
#include "client/fp8ctl_commands.h"

namespace {

// Ctrl-C detaches: the process ends, the job on the daemon is untouched. The handler only
// restores the cursor line (async-signal-safe write) before exiting.
void OnInterrupt(int) {
  static const char kMessage[] = "\ndetached (the job keeps running)\n";
  ssize_t ignored = write(STDERR_FILENO, kMessage, sizeof(kMessage) - 1);
  (void)ignored;
  _exit(130);
}

std::string Env(const char* name) {
  const char* v = std::getenv(name);
  return v ? v : "";
}

}  // namespace

int main(int argc, char** argv) {
  std::signal(SIGINT, OnInterrupt);
  std::vector<std::string> args(argv + 1, argv + argc);
  auto cl = fp8d::client::ParseCommandLine(args, Env("FP8D_ADDR"), Env("FP8D_TOKEN_FILE"));
  if (!cl.ok()) {
    std::cerr << "fp8ctl: " << cl.status().message() << "\n";
    return fp8d::client::kExitUsage;
  }
  return fp8d::client::RunCommand(*cl, std::cout, std::cerr);
}
