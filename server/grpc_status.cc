#include "server/grpc_status.h"

#include <string>

namespace fp8d {

grpc::Status ToGrpcStatus(const absl::Status& status) {
  if (status.ok()) return grpc::Status::OK;
  // absl::StatusCode and grpc::StatusCode both follow google.rpc.Code, 0..16.
  const int code = static_cast<int>(status.code());
  const auto grpc_code = (code >= 0 && code <= 16) ? static_cast<grpc::StatusCode>(code)
                                                   : grpc::StatusCode::UNKNOWN;
  return grpc::Status(grpc_code, std::string(status.message()));
}

}  // namespace fp8d
