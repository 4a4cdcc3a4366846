// Requests the server cannot decode (bytes that are not a valid serialized message of the
// method's request type, or a `string` field holding bytes that are not UTF-8) are refused by
// gRPC's generated code with INTERNAL and an empty message ("No payload" when no message came).
// Neither is a server fault: this interceptor rewrites those answers, and only those, to
// INVALID_ARGUMENT naming the method and what was wrong, so every call gets a status a client
// can act on. The service itself never answers INTERNAL without a message.
#pragma once

#include <memory>

#include <grpcpp/support/server_interceptor.h>

namespace fp8d {

class DecodeErrorInterceptorFactory
    : public grpc::experimental::ServerInterceptorFactoryInterface {
 public:
  grpc::experimental::Interceptor* CreateServerInterceptor(
      grpc::experimental::ServerRpcInfo* info) override;
};

}  // namespace fp8d
