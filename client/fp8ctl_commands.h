// fp8ctl's commands on top of TrainerClient. Each returns the process exit code: 0 on success,
// 1 when the daemon answered with an error (printed as `CODE: message`), 2 for usage errors.
#pragma once

#include <iosfwd>

#include "client/command_line.h"

namespace fp8d::client {

inline constexpr int kExitOk = 0;
inline constexpr int kExitError = 1;
inline constexpr int kExitUsage = 2;

int RunCommand(const CommandLine& cl, std::ostream& out, std::ostream& err);

}  // namespace fp8d::client
