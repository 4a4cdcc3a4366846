// fp8ctl's commands on top of TrainerClient. RunCommand returns the process exit code: 0 on
// success, 1 when the daemon answered with an error (printed as `CODE: message`, with a hint
// when the daemon cannot be reached), 2 for usage errors.
#pragma once

#include <iosfwd>
#include <string>

#include "client/fp8ctl_cli.h"

namespace fp8d::client {

int RunCommand(const Fp8ctlArgs& args, std::ostream& out, std::ostream& err);

// What Ctrl-C prints during the command (client/interrupt_message.h): a job never stops because
// fp8ctl does, and a pull keeps what it received.
std::string InterruptMessage(const Fp8ctlArgs& args);

}  // namespace fp8d::client
