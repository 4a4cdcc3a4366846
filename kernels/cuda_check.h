// Checked calls into the CUDA runtime, cuBLAS(Lt) and cuDNN, reporting the failing expression
// with file and line.
//
// Two flavours, chosen by what a failure means:
//  - CUDA_CHECK / CUBLAS_CHECK / CUDNN_CHECK print the error and abort. Use them inside
//    the step and in kernel launchers: a failed launch or a cuBLAS error there is a broken
//    invariant (bad pointers, wrong sizes computed by the engine), and continuing would train on
//    garbage.
//  - CUDA_RETURN_IF_ERROR / CUBLAS_RETURN_IF_ERROR / CUDNN_RETURN_IF_ERROR return an absl::Status
//    from the enclosing function. Use them where the cause can be the environment or the job
//    (no device, out of memory at job start, an unsupported cuDNN graph), so the caller can
//    answer the user with FAILED_PRECONDITION or RESOURCE_EXHAUSTED instead of dying.
#pragma once

#include <cublasLt.h>
#include <cuda_runtime.h>
#include <cudnn.h>

#include <cstdio>
#include <cstdlib>
#include <string>

#include "absl/status/status.h"
#include "absl/strings/str_format.h"

namespace fp8d::kernels {

// Out-of-memory maps to RESOURCE_EXHAUSTED so the daemon reports "job does not fit"; a missing
// or unusable device to FAILED_PRECONDITION; anything else is INTERNAL.
inline absl::Status CudaErrorToStatus(cudaError_t err, const char* expr, const char* file,
                                      int line) {
  if (err == cudaSuccess) return absl::OkStatus();
  const std::string msg = absl::StrFormat("%s failed at %s:%d: %s (%s)", expr, file, line,
                                          cudaGetErrorName(err), cudaGetErrorString(err));
  switch (err) {
    case cudaErrorMemoryAllocation:
      return absl::ResourceExhaustedError(msg);
    case cudaErrorNoDevice:
    case cudaErrorInsufficientDriver:
    case cudaErrorInvalidDevice:
      return absl::FailedPreconditionError(msg);
    default:
      return absl::InternalError(msg);
  }
}

inline absl::Status CublasErrorToStatus(cublasStatus_t err, const char* expr, const char* file,
                                        int line) {
  if (err == CUBLAS_STATUS_SUCCESS) return absl::OkStatus();
  const std::string msg = absl::StrFormat("%s failed at %s:%d: %s (%s)", expr, file, line,
                                          cublasLtGetStatusName(err), cublasLtGetStatusString(err));
  if (err == CUBLAS_STATUS_ALLOC_FAILED) return absl::ResourceExhaustedError(msg);
  if (err == CUBLAS_STATUS_NOT_SUPPORTED || err == CUBLAS_STATUS_ARCH_MISMATCH) {
    return absl::FailedPreconditionError(msg);
  }
  return absl::InternalError(msg);
}

inline absl::Status CudnnErrorToStatus(cudnnStatus_t err, const char* expr, const char* file,
                                       int line) {
  if (err == CUDNN_STATUS_SUCCESS) return absl::OkStatus();
  const std::string msg =
      absl::StrFormat("%s failed at %s:%d: %s", expr, file, line, cudnnGetErrorString(err));
  if (err == CUDNN_STATUS_ALLOC_FAILED) return absl::ResourceExhaustedError(msg);
  if (err == CUDNN_STATUS_NOT_SUPPORTED || err == CUDNN_STATUS_ARCH_MISMATCH) {
    return absl::FailedPreconditionError(msg);
  }
  return absl::InternalError(msg);
}

[[noreturn]] inline void DieWithStatus(const absl::Status& status) {
  std::fprintf(stderr, "fp8d kernels: %s\n", std::string(status.message()).c_str());
  std::abort();
}

}  // namespace fp8d::kernels

// A broken invariant in a launcher (sizes the engine computed wrongly): print where and abort.
#define FP8D_KERNELS_CHECK(cond)                                                       \
  do {                                                                                 \
    if (!(cond)) {                                                                     \
      std::fprintf(stderr, "fp8d kernels: check failed at %s:%d: %s\n", __FILE__,      \
                   __LINE__, #cond);                                                   \
      std::abort();                                                                    \
    }                                                                                  \
  } while (0)

#define FP8D_KERNELS_CHECK_IMPL_(to_status, expr)                                    \
  do {                                                                               \
    const absl::Status fp8d_check_status_ = ::fp8d::kernels::to_status(             \
        (expr), #expr, __FILE__, __LINE__);                                          \
    if (!fp8d_check_status_.ok()) ::fp8d::kernels::DieWithStatus(fp8d_check_status_); \
  } while (0)

#define FP8D_KERNELS_RETURN_IMPL_(to_status, expr)                                   \
  do {                                                                               \
    absl::Status fp8d_check_status_ = ::fp8d::kernels::to_status(                   \
        (expr), #expr, __FILE__, __LINE__);                                          \
    if (!fp8d_check_status_.ok()) return fp8d_check_status_;                         \
  } while (0)

#define CUDA_CHECK(expr) FP8D_KERNELS_CHECK_IMPL_(CudaErrorToStatus, expr)
#define CUBLAS_CHECK(expr) FP8D_KERNELS_CHECK_IMPL_(CublasErrorToStatus, expr)
#define CUDNN_CHECK(expr) FP8D_KERNELS_CHECK_IMPL_(CudnnErrorToStatus, expr)

#define CUDA_RETURN_IF_ERROR(expr) FP8D_KERNELS_RETURN_IMPL_(CudaErrorToStatus, expr)
#define CUBLAS_RETURN_IF_ERROR(expr) FP8D_KERNELS_RETURN_IMPL_(CublasErrorToStatus, expr)
#define CUDNN_RETURN_IF_ERROR(expr) FP8D_KERNELS_RETURN_IMPL_(CudnnErrorToStatus, expr)

// After a kernel launch: catches bad launch configurations at the launch site. It does not
// synchronise, so faults inside the kernel surface at the next synchronising call.
#define CUDA_CHECK_LAUNCH() CUDA_CHECK(cudaGetLastError())
