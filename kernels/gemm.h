// GEMMs through cuBLASLt with cached plans. The API is row-major, like every tensor in the
// engine: D[m, n] = alpha * op(A)[m, k] * op(B)[k, n] + beta * C[m, n]. cuBLASLt is column-major,
// so a call computes D^T = op(B)^T op(A)^T; the forward `x · W^T` of a Linear layer with
// W [out, in] then becomes cuBLASLt's TN layout, the one FP8 GEMMs on Hopper require.
//
// Options live in a GemmConfig that mirrors cuBLASLt's matmul attributes (transposes, data
// types, compute type, epilogue, scale pointers) instead of a long argument list. A plan (matmul
// descriptor, matrix layouts and the heuristic's algorithm) is built once per GemmDesc and kept
// in a map; all GEMMs share one workspace owned by the caller's memory plan.
#pragma once

#include <cublasLt.h>
#include <cuda_runtime.h>

#include <cstddef>
#include <cstdint>
#include <map>
#include <memory>
#include <tuple>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace fp8d::kernels {

// cuBLASLt's recommended workspace on Hopper.
inline constexpr size_t kGemmWorkspaceBytes = size_t{32} << 20;

struct GemmConfig {
  bool trans_a = false;  // A stored [k, m] instead of [m, k]
  bool trans_b = false;  // B stored [n, k] instead of [k, n] (a Linear weight in forward)
  cudaDataType_t a_type = CUDA_R_16BF;
  cudaDataType_t b_type = CUDA_R_16BF;
  cudaDataType_t c_type = CUDA_R_16BF;  // C and D share a type (cuBLASLt requires it off FP8)
  cublasComputeType_t compute_type = CUBLAS_COMPUTE_32F;
  cudaDataType_t scale_type = CUDA_R_32F;
  cublasLtEpilogue_t epilogue = CUBLASLT_EPILOGUE_DEFAULT;
  float alpha = 1.f;
  float beta = 0.f;  // 1 accumulates into D (gradient accumulation over micro-batches)
  // FP8 only: device pointers to the dequantisation scales of A and B and the scale of D.
  const float* a_scale = nullptr;
  const float* b_scale = nullptr;
  const float* d_scale = nullptr;
  bool fast_accum = false;  // FP8 only: CUBLASLT_MATMUL_DESC_FAST_ACCUM
  // Row strides in elements of A, B and D (C shares D's), 0 for dense. A stride larger than the
  // row lets a GEMM read or write a block of columns of a wider matrix in place (the Q and K
  // columns of the fused QKV projection).
  int64_t lda = 0, ldb = 0, ldd = 0;
};

struct GemmShape {
  int64_t m = 0, n = 0, k = 0;
};

// What a plan depends on. Pointers and alpha are not part of it: they change per call.
struct GemmDesc {
  int64_t m, n, k;
  bool trans_a, trans_b;
  int a_type, b_type, c_type, compute_type, scale_type, epilogue;
  bool accumulate;  // beta != 0: the heuristic must pick an algorithm that reads C
  bool fast_accum;
  bool scaled;
  int64_t lda, ldb, ldd;

  static GemmDesc From(const GemmConfig& config, const GemmShape& shape);
  bool operator<(const GemmDesc& o) const {
    return std::tie(m, n, k, trans_a, trans_b, a_type, b_type, c_type, compute_type, scale_type,
                    epilogue, accumulate, fast_accum, scaled, lda, ldb, ldd) <
           std::tie(o.m, o.n, o.k, o.trans_a, o.trans_b, o.a_type, o.b_type, o.c_type,
                    o.compute_type, o.scale_type, o.epilogue, o.accumulate, o.fast_accum,
                    o.scaled, o.lda, o.ldb, o.ldd);
  }
};

// One per engine (handles are per thread and device; the engine runs on one thread).
class GemmRunner {
 public:
  // `workspace` of `workspace_bytes` device memory stays owned by the caller.
  static absl::StatusOr<std::unique_ptr<GemmRunner>> Create(void* workspace,
                                                            size_t workspace_bytes);
  ~GemmRunner();
  GemmRunner(const GemmRunner&) = delete;
  GemmRunner& operator=(const GemmRunner&) = delete;

  // D = alpha * op(A) op(B) + beta * C, where C is D (in place accumulation) unless `c` is
  // given (same type and layout as D; e.g. the residual stream added in the GEMM's epilogue).
  // Builds and caches the plan on first use of a shape; INTERNAL with the cuBLASLt status when
  // no algorithm fits.
  absl::Status Run(const GemmConfig& config, const GemmShape& shape, const void* a, const void* b,
                   void* d, cudaStream_t stream, const void* c = nullptr);

  size_t cached_plans() const { return plans_.size(); }

 private:
  struct Plan;
  GemmRunner(cublasLtHandle_t handle, void* workspace, size_t workspace_bytes);
  absl::StatusOr<const Plan*> GetPlan(const GemmConfig& config, const GemmShape& shape);

  cublasLtHandle_t handle_;
  void* workspace_;
  size_t workspace_bytes_;
  std::map<GemmDesc, std::unique_ptr<Plan>> plans_;
};

}  // namespace fp8d::kernels
