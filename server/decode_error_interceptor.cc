#include "server/decode_error_interceptor.h"

#include <string>

#include "absl/strings/str_cat.h"

namespace fp8d {
namespace {

// gRPC's codegen (grpcpp/impl/codegen/proto_utils.h) answers a request it cannot parse with
// INTERNAL and the message's InitializationErrorString(), which is empty for proto3, and a
// missing request with INTERNAL "No payload".
bool IsDecodeFailure(const grpc::Status& status) {
  return status.error_code() == grpc::StatusCode::INTERNAL &&
         (status.error_message().empty() || status.error_message() == "No payload");
}

class DecodeErrorInterceptor : public grpc::experimental::Interceptor {
 public:
  explicit DecodeErrorInterceptor(std::string method) : method_(std::move(method)) {}

  void Intercept(grpc::experimental::InterceptorBatchMethods* methods) override {
    if (methods->QueryInterceptionHookPoint(
            grpc::experimental::InterceptionHookPoints::PRE_SEND_STATUS)) {
      const grpc::Status status = methods->GetSendStatus();
      if (IsDecodeFailure(status)) {
        const bool missing = status.error_message() == "No payload";
        methods->ModifySendStatus(grpc::Status(
            grpc::StatusCode::INVALID_ARGUMENT,
            absl::StrCat(method_, ": ",
                         missing ? "the request carried no message"
                                 : "the request is not a valid serialized message of this "
                                   "method's request type (or a string field is not UTF-8)")));
      }
    }
    methods->Proceed();
  }

 private:
  const std::string method_;
};

}  // namespace

grpc::experimental::Interceptor* DecodeErrorInterceptorFactory::CreateServerInterceptor(
    grpc::experimental::ServerRpcInfo* info) {
  return new DecodeErrorInterceptor(info->method() == nullptr ? "" : info->method());
}

}  // namespace fp8d
