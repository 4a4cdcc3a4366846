// One Linear layer's three GEMMs in FP8 on the GPU: the device side of core/ref/fp8_linear.h,
// for W [n, k], X [m, k] and dY [m, n] (row-major):
//
//   forward  Y [m, n]  = Q(X) Q(W)^T    BF16 out, fast accumulation per the options
//   dgrad    dX [m, k] = Q(dY) Q(W)     BF16 out, split accumulation
//   wgrad    dW [n, k] += Q(dY)^T Q(X)  FP32 accumulated into dW, split accumulation
//
// Hopper's FP8 GEMMs are TN only (gemm_fp8.h), so every operand is handed to cuBLASLt with its
// contraction axis contiguous, and the dgrad and wgrad operands that contract along the other
// axis are physically transposed FP8 copies:
//   forward  x = Q(X)   [m, k]      w = Q(W)   [n, k]
//   dgrad    x = Q(dY)  [m, n]      w = Q(W)^T [k, n]
//   wgrad    x = Q(dY)^T [n, m]     w = Q(X)^T [k, m]
// Quantization follows the reference exactly:
//  - per tensor (delayed: the scale read from device memory; current: from the tensor's amax now)
//    quantizes a tensor identically in either layout, so one cast kernel writes both copies in
//    one read of the input (X: in the forward, kept for the backward; W: in CastWeights; dY: in
//    the backward);
//  - rowwise and 1x128 blockwise requantize each operand along the consuming GEMM's contraction
//    axis: the transposed copies come from the transposed rowwise/blockwise casts, with scales
//    along the columns of the source (X^T is cast from the BF16 X in the backward).
// X and W are E4M3; dY is E5M2 under the HYBRID format, else E4M3.
//
// FP8 weight caching: CastWeights casts W once (both copies, with their scales) and every
// Forward/Backward until the next CastWeights reads those copies, so micro-batches of one
// optimizer step share one weight cast. Call it after each optimizer update (and, for delayed
// scaling, after the scale update) and before the first Forward of the step.
//
// Memory: Forward/Backward never allocate. What must live from one call to the next (the weight
// cache, the forward's Q(X)^T until the backward, the scale arrays) is in a caller-provided
// workspace that belongs to the layer. What lives only inside one call (Q(X) in the forward,
// Q(dY) and Q(dY)^T in the backward) is scratch: at the end of the workspace, or in a buffer
// the caller shares between layers that run one after another on one stream, which keeps the
// FP8 memory of a model to its saved activations and weight copies.
//
// Statistics: Forward writes the INPUT stats (forward layout), CastWeights the WEIGHT stats
// (forward layout), Backward the GRAD_OUTPUT stats (dgrad layout), each an Fp8CastStats in
// caller-provided device memory, as core's Fp8LinearStats defines them. Each call overwrites its
// entry; nothing synchronizes with the host. Under delayed scaling the amax field is this step's
// amax for the scale update (DelayedScalingUpdate); with several micro-batches per step the
// caller takes the max over them.
//
// 128x128 weight tiles (blockwise with weight_block 128x128): W and W^T are cast once per step
// with one scale per tile (the same tiles in both layouts) and the forward and dgrad GEMMs read
// them as BLK128x128_32F against 1x128 X and dY; the wgrad GEMM is the 1x128 one.
//
// Not covered here: fp32_out_rows (skip_attention_qk's BF16 Q/K rows); the CUDA engine runs
// those columns as a separate BF16 GEMM and only the V rows through an Fp8Linear.
#pragma once

#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <cstddef>
#include <cstdint>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "core/recipe_config.h"
#include "kernels/fp8_cast.cuh"
#include "kernels/fp8_fused.cuh"
#include "kernels/gemm.h"
#include "kernels/gemm_fp8.h"

namespace fp8d::kernels {

// Order of the per-layer tensors in the stats array (and of core's Fp8LinearStats).
enum Fp8LinearRole : int { kFp8Input = 0, kFp8Weight = 1, kFp8GradOutput = 2, kFp8LinearRoles = 3 };

enum class Fp8LinearScaling {
  kDelayed,    // per tensor, scale from device memory (Fp8LinearScales)
  kCurrent,    // per tensor, scale from this tensor's amax: ComputeScale(amax, max, margin, 1)
  kRowwise,    // one scale per row along the contraction axis (OUTER_VEC_32F)
  kBlock1x128  // one scale per 128 elements along the contraction axis (VEC128_32F)
};

struct Fp8LinearOptions {
  Fp8LinearScaling scaling = Fp8LinearScaling::kDelayed;
  Fp8Format grad_format = Fp8Format::kE5M2;  // dY; X and W are always E4M3
  int margin = 0;                            // kCurrent only
  bool fast_accum_forward = true;  // ignored for 1x128 blocks (no such cuBLASLt algorithm on sm_90)
  // kBlock1x128 only: W in 128x128 tiles (one scale per tile, cuBLASLt's BLK128x128_32F, its
  // layout in kernels/fp8_block128.cuh) instead of 1x128 blocks; X and dY stay 1x128.
  bool weight_tiles_128x128 = false;
};

// The options a recipe implies. INVALID_ARGUMENT for bf16 (not an FP8 recipe),
// FAILED_PRECONDITION for mxfp8 (needs sm_100+), UNIMPLEMENTED for 128x128 weight blocks.
absl::StatusOr<Fp8LinearOptions> Fp8LinearOptionsFromRecipe(const RecipeConfig& recipe);

// Delayed scaling: device pointers to the quantization scales (fp8_max / amax, not inverted) of
// the three tensors, read at every cast, so the caller may update them in place between steps.
struct Fp8LinearScales {
  const float* input = nullptr;
  const float* weight = nullptr;
  const float* grad_output = nullptr;
};

class Fp8Linear {
 public:
  // Bytes of the workspace Create wants for the shape {m, n, k} (m tokens, n out features, k in
  // features) and options; 256-byte aligned pieces. With `shared_scratch` the scratch is not
  // included (the caller passes a separate scratch of ScratchBytes).
  static size_t WorkspaceBytes(const GemmShape& shape, const Fp8LinearOptions& options,
                               bool shared_scratch = false);
  static size_t ScratchBytes(const GemmShape& shape, const Fp8LinearOptions& options);

  // `runner` (not owned) runs the GEMMs; `workspace` holds WorkspaceBytes(shape, options,
  // scratch != nullptr) bytes and `stats` kFp8LinearRoles Fp8CastStats, both device memory the
  // caller keeps alive; `scratch`, when given, holds ScratchBytes(shape, options) bytes that
  // other users may overwrite between this layer's calls.
  // INVALID_ARGUMENT when m, n or k is not a positive multiple of 16 (each is the contraction
  // dimension of one GEMM, and FP8 tensor cores want 16-byte rows), the workspace is too small
  // or a pointer is missing (delayed scaling needs all three scales).
  static absl::StatusOr<Fp8Linear> Create(Fp8GemmRunner* runner, const GemmShape& shape,
                                          const Fp8LinearOptions& options,
                                          const Fp8LinearScales& scales, void* workspace,
                                          size_t workspace_bytes, Fp8CastStats* stats,
                                          void* scratch = nullptr, size_t scratch_bytes = 0);

  // Sets the rows (tokens) m of the calls that follow: a positive multiple of 16, at most the m
  // the layer was created with (its workspace and scratch stay carved for that m, so the cached
  // weight copies survive). The LM head runs a micro-batch in row chunks through one layer so.
  // Each call still writes its own INPUT / GRAD_OUTPUT stats: the caller merges them per chunk.
  absl::Status SetRows(int64_t m);

  // Casts W [n, k] (the BF16 copy, or the FP32 master) into the cached FP8 copies and writes
  // the WEIGHT stats.
  void CastWeights(const __nv_bfloat16* w, cudaStream_t stream);
  void CastWeights(const float* w, cudaStream_t stream);

  // y [m, n] = Q(x) Q(W)^T (+ residual [m, n] when given, added in the GEMM's epilogue) from
  // x [m, k]. With `for_backward`, also keeps what the backward needs from X (per tensor:
  // Q(X)^T, written by the same cast). Needs CastWeights first.
  absl::Status Forward(const __nv_bfloat16* x, __nv_bfloat16* y, cudaStream_t stream,
                       bool for_backward = true, const __nv_bfloat16* residual = nullptr);

  // dx [m, k] = Q(dy) Q(W) (overwritten), dw [n, k] += Q(dy)^T Q(x) (FP32). `x` is the input
  // of the matching Forward (the block modes requantize it along the tokens). dx may be null
  // (the first layer needs no input gradient).
  absl::Status Backward(const __nv_bfloat16* dy, const __nv_bfloat16* x, __nv_bfloat16* dx,
                        float* dw, cudaStream_t stream);

  // Delayed (per-tensor, scale known in advance) scaling only: a producer kernel
  // (kernels/fp8_fused.cuh) may write the FP8 copies of X or dY itself instead of a BF16 tensor
  // this layer would cast. InputTarget / GradOutputTarget say where (and which scale and stats
  // slot), ForwardQuantized / BackwardQuantized then run the GEMMs on what the producer wrote:
  // the same results as Forward / Backward on the BF16 tensor.
  bool TakesQuantizedOperands() const { return options_.scaling == Fp8LinearScaling::kDelayed; }
  Fp8CastTarget InputTarget(bool for_backward) const;
  absl::Status ForwardQuantized(__nv_bfloat16* y, cudaStream_t stream,
                                const __nv_bfloat16* residual = nullptr);
  Fp8CastTarget GradOutputTarget() const;
  absl::Status BackwardQuantized(__nv_bfloat16* dx, float* dw, cudaStream_t stream);

  const GemmShape& shape() const { return shape_; }
  const Fp8LinearOptions& options() const { return options_; }

 private:
  // One operand's FP8 bytes and its dequantization factors (1 / scale, in the GEMM's layout).
  struct Operand {
    uint8_t* data = nullptr;
    float* scale_inv = nullptr;
  };
  struct Layout;  // offsets of the pieces, shared by WorkspaceBytes and Create

  Fp8Linear() = default;
  template <typename T>
  void CastWeightsImpl(const T* w, cudaStream_t stream);
  // `weight_gemm`: the GEMM reads W or W^T (forward, dgrad), which may be in 128x128 tiles.
  Fp8GemmConfig GemmConfig(Fp8Format x_format, const Operand& x, const Operand& w,
                           bool weight_gemm) const;
  // The GEMMs of Forward and Backward, on the FP8 copies already in place.
  absl::Status ForwardGemm(__nv_bfloat16* y, cudaStream_t stream, const __nv_bfloat16* residual);
  absl::Status BackwardGemms(__nv_bfloat16* dx, float* dw, cudaStream_t stream);

  Fp8GemmRunner* runner_ = nullptr;
  GemmShape shape_;
  int64_t max_rows_ = 0;  // the m of Create, which the workspace is carved for
  Fp8LinearOptions options_;
  Fp8LinearScales scales_;
  Fp8CastStats* stats_ = nullptr;
  float* current_scale_ = nullptr;  // kCurrent: the scale each cast derives (written, unused)
  Operand x_, x_t_, w_, w_t_, dy_, dy_t_;
  bool weights_cast_ = false;
};

}  // namespace fp8d::kernels
