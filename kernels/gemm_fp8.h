// FP8 GEMMs through cuBLASLt on Hopper. Hopper's FP8 tensor-core GEMMs exist only in the "TN"
// layout, so this runner offers exactly one product, in the engine's row-major terms:
//
//   Y[m, n] = alpha * dequant(X)[m, k] * dequant(W)[n, k]^T  (+ Y[m, n] when accumulating)
//
// with X and W both contracted along their contiguous (last) axis. cuBLASLt is column-major and
// a row-major [r, c] matrix is a column-major [c, r] one, so the call computes
//   Y^T[n, m] = op(A)[n, k] * op(B)[k, m],  A = W seen as column-major [k, n] with op(A) = T,
//                                           B = X seen as column-major [k, m] with op(B) = N,
// i.e. cuBLASLt's M = n, N = m, K = k, TRANSA = T, TRANSB = N; D = Y^T is column-major [n, m]
// with ld n, which is Y row-major. Every Linear GEMM of a step takes this form:
//   forward  Y  = X  · W^T          x = X [tokens, in],       w = W [out, in]
//   dgrad    dX = dY · W            x = dY [tokens, out],     w = W^T [in, out]  (transposed copy)
//   wgrad    dW = dY^T · X          x = dY^T [out, tokens],   w = X^T [in, tokens] (transposed copies)
// which is why the cast kernels (fp8_cast.cuh) write the transposed FP8 copy in the same pass.
//
// Scales: cuBLASLt's A/B scale pointers multiply the product, so they hold the DEQUANTISATION
// factors 1 / scale (`scale_inv` from the cast kernels), not the quantisation scales:
//  - kTensor  (SCALAR_32F): one float each for X and W;
//  - kRowwise (OUTER_VEC_32F): x_scale_inv[m] per row of X, w_scale_inv[n] per row of W;
//  - kBlock1x128 (VEC128_32F on both): one float per 128 elements along k, block kb of row r at
//    [kb * rows + r] (rows = m for X, n for W), the layout tests/gpu/gemm_fp8_test.cu checks;
//  - kBlock128x128 (BLK128x128_32F for W, VEC128_32F for X): W has one float per 128x128 tile in
//    the layout kCublasLtTileScaleLayout of fp8_block128.cuh (written by Block128x128CastToFp8;
//    tests/gpu/gemm_fp8_block128_test.cu checks it on the GPU), X is 1x128 as above. This is the
//    blockwise recipe with 128x128 weight blocks.
// Types: E4M3 x E4M3 (forward) or one E5M2 operand with one E4M3 (HYBRID gradients, either order);
// E5M2 x E5M2 has no Hopper kernel. Output BF16, or FP32 for weight gradients accumulated over
// micro-batches (accumulate = true: beta = 1, C is Y). Accumulation in FP32; fast_accum selects
// Hopper's faster FP8 accumulation (forward), off gives the split accumulation dgrad/wgrad want.
//
// Plans (matmul descriptor, layouts, heuristic's algorithm) are cached per Fp8GemmDesc and all
// GEMMs share one caller-owned workspace, as in gemm.h.
#pragma once

#include <cublasLt.h>
#include <cuda_runtime.h>

#include <cstddef>
#include <cstdint>
#include <map>
#include <memory>
#include <tuple>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "kernels/gemm.h"

namespace fp8d::kernels {

enum class Fp8ScaleMode { kTensor, kRowwise, kBlock1x128, kBlock128x128 };

struct Fp8GemmConfig {
  cudaDataType_t x_type = CUDA_R_8F_E4M3;  // CUDA_R_8F_E4M3 or CUDA_R_8F_E5M2
  cudaDataType_t w_type = CUDA_R_8F_E4M3;
  cudaDataType_t out_type = CUDA_R_16BF;  // CUDA_R_16BF or CUDA_R_32F
  Fp8ScaleMode scale_mode = Fp8ScaleMode::kTensor;
  // Device pointers to dequantisation factors (1 / scale), laid out per scale_mode. Required.
  const float* x_scale_inv = nullptr;
  const float* w_scale_inv = nullptr;
  bool fast_accum = false;
  bool accumulate = false;  // Y += product (beta = 1) instead of Y = product
  float alpha = 1.f;
};

// What a plan depends on; pointers and alpha change per call and are not part of it.
struct Fp8GemmDesc {
  int64_t m, n, k;
  int x_type, w_type, out_type, scale_mode;
  bool fast_accum, accumulate;

  static Fp8GemmDesc From(const Fp8GemmConfig& config, const GemmShape& shape);
  bool operator<(const Fp8GemmDesc& o) const {
    return std::tie(m, n, k, x_type, w_type, out_type, scale_mode, fast_accum, accumulate) <
           std::tie(o.m, o.n, o.k, o.x_type, o.w_type, o.out_type, o.scale_mode, o.fast_accum,
                    o.accumulate);
  }
};

// GPU time of the GEMMs one plan ran while timing was on (Fp8GemmRunner::set_timing).
struct Fp8GemmTiming {
  Fp8GemmDesc desc;
  int64_t calls = 0;
  double ms = 0;  // summed over the calls
};

// One per engine thread, like GemmRunner.
class Fp8GemmRunner {
 public:
  // `workspace` of `workspace_bytes` device memory stays owned by the caller (it may be the
  // BF16 runner's: the engine runs its GEMMs one after another on one stream).
  static absl::StatusOr<std::unique_ptr<Fp8GemmRunner>> Create(void* workspace,
                                                               size_t workspace_bytes);
  ~Fp8GemmRunner();
  Fp8GemmRunner(const Fp8GemmRunner&) = delete;
  Fp8GemmRunner& operator=(const Fp8GemmRunner&) = delete;

  // Y[m, n] (= or +=) alpha * X[m, k] * W[n, k]^T, shape = {m, n, k}. INVALID_ARGUMENT for
  // unsupported types, non-positive sizes, k not a multiple of 16 or n not a multiple of 8
  // (FP8 tensor cores need 16-byte aligned rows of X, W and Y) or missing scale pointers;
  // FAILED_PRECONDITION or INTERNAL with the cuBLASLt status when the library has no algorithm
  // (e.g. no FP8 on this GPU). A vocabulary-sized LM head (n = 50257) therefore stays BF16.
  // With `accumulate`, C is Y unless `c` is given (same type and layout as Y): Y = product + C,
  // e.g. the residual stream added in the epilogue.
  absl::Status Run(const Fp8GemmConfig& config, const GemmShape& shape, const uint8_t* x,
                   const uint8_t* w, void* y, cudaStream_t stream, const void* c = nullptr);

  size_t cached_plans() const { return plans_.size(); }

  // Measurement (fp8d-bench --gemm-timing): while on, every Run records a CUDA event before and
  // after its GEMM on the GEMM's stream, which orders nothing new but costs two records per
  // call. TakeTimings waits for the recorded GEMMs, sums their times per plan (in the order the
  // plans first ran) and forgets them.
  void set_timing(bool on) { timing_ = on; }
  absl::StatusOr<std::vector<Fp8GemmTiming>> TakeTimings();

 private:
  struct Plan;
  struct TimedCall {
    Fp8GemmDesc desc;
    cudaEvent_t start = nullptr, end = nullptr;
  };
  Fp8GemmRunner(cublasLtHandle_t handle, void* workspace, size_t workspace_bytes);
  absl::StatusOr<const Plan*> GetPlan(const Fp8GemmConfig& config, const GemmShape& shape);

  cublasLtHandle_t handle_;
  void* workspace_;
  size_t workspace_bytes_;
  std::map<Fp8GemmDesc, std::unique_ptr<Plan>> plans_;
  bool timing_ = false;
  std::vector<TimedCall> timed_;
};

}  // namespace fp8d::kernels
