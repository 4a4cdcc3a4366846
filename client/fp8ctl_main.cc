// fp8ctl: command-line client of the fp8d daemon. See `fp8ctl --help`.
#include <cstdlib>
#include <iostream>
#include <string>
#include <vector>

#include "client/fp8ctl_cli.h"
#include "client/fp8ctl_commands.h"
#include "client/interrupt_message.h"

namespace {

std::string Env(const char* name) {
  const char* v = std::getenv(name);
  return v ? v : "";
}

}  // namespace

int main(int argc, char** argv) {
  std::vector<std::string> args(argv + 1, argv + argc);
  fp8d::client::Fp8ctlArgs parsed;
  if (auto code = fp8d::client::ParseFp8ctlArgs(args, Env("FP8D_ADDR"), Env("FP8D_TOKEN_FILE"),
                                                &parsed, std::cout, std::cerr)) {
    return *code;
  }
  // Ctrl-C ends fp8ctl, never a job; each command says what an interruption leaves behind.
  fp8d::client::InstallInterruptHandler(fp8d::client::InterruptMessage(parsed));
  return fp8d::client::RunCommand(parsed, std::cout, std::cerr);
}
