// The one place where absl::Status (what core/ and the registry return) becomes grpc::Status
// (what clients see). The canonical codes share numbers, so the mapping keeps code and message.
#pragma once

#include "absl/status/status.h"
#include <grpcpp/support/status.h>

namespace fp8d {

grpc::Status ToGrpcStatus(const absl::Status& status);

}  // namespace fp8d
