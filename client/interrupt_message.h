// What fp8ctl prints when Ctrl-C ends it. The command's message (a watch detaches and the job
// keeps running; a pull keeps PATH.partial to resume from) is set before the handler is
// installed, so whenever the handler runs it says the right thing; it only calls write(2)
// (async-signal-safe) and exits with 130.
#pragma once

#include <string>

namespace fp8d::client {

inline constexpr int kExitInterrupted = 130;

// Installs the SIGINT handler printing `message` (a newline is added).
void InstallInterruptHandler(const std::string& message);

}  // namespace fp8d::client
