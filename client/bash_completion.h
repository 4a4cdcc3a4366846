// `fp8ctl completion bash`: a bash completion script generated from fp8ctl's CLI11 definitions,
// so it completes exactly the commands and options the parser accepts. Job arguments complete
// with the ids of the daemon's jobs (`fp8ctl jobs -q`, given two seconds), job files and --out
// paths with file names.
#pragma once

#include <string>

namespace CLI {
class App;
}

namespace fp8d::client {

std::string BashCompletionScript(const CLI::App& app);

}  // namespace fp8d::client
