// FP8 quantization on the GPU: the device side of core/fp8_quantize.h, byte for byte.
//
// Every launcher quantizes a row-major [rows, cols] BF16 or FP32 tensor as
//   q = __nv_cvt_float_to_fp8(float(x) * scale, __NV_SATFINITE, format)
// (the multiply in FP32, then one round-to-nearest-even conversion that saturates finite
// overflow), which is what core's FloatToFp8(x * scale) computes on the CPU. The GEMMs take the
// dequantisation factor 1 / scale (`scale_inv`), so the launchers write it next to the bytes.
//
// Scaling flavours:
//  - per tensor, scale given (delayed scaling): CastToFp8, optionally writing the transposed copy
//    [cols, rows] in the same pass (the backward's dgrad/wgrad need the other contraction axis);
//  - per tensor, scale from this tensor's own amax (current scaling): CurrentScaleCastToFp8, an
//    amax kernel then a cast kernel that derives the scale on the device (no host round trip);
//  - one scale per row (rowwise, cuBLASLt OUTER_VEC_32F) and one per 128-element block of a row
//    (1x128 blockwise, cuBLASLt VEC128_32F), scale = fp8_max / amax of the row or block.
//
// Statistics for telemetry (amax, saturated and flushed-to-zero counts) are gathered in the same
// pass into an Fp8CastStats in device memory that the launcher zeroes first. Max and integer
// counts are order independent, so the atomics that combine blocks give exact, run-to-run
// identical results.
#pragma once

#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <cstdint>

#include "core/recipe_config.h"

namespace fp8d::kernels {

// Device-resident statistics of one quantization, with the meaning of core's QuantStats.
struct Fp8CastStats {
  float amax;           // max |x| of the input; NaN if any input is NaN
  uint32_t reserved;    // keeps the counters 8-byte aligned
  uint64_t saturated;   // |x * scale| > fp8_max (clipped to +-max)
  uint64_t underflow;   // x != 0 but quantized to +-0
  uint64_t nonzero;     // x != 0 (NaN included, as on the CPU)
};

// Per-tensor cast with a device-resident scale (delayed scaling). Writes
//  - out [rows, cols] FP8 bytes;
//  - out_t [cols, rows], the transposed copy, when non-null (same read of the input);
//  - *scale_inv = 1 / *scale when non-null (what the GEMM's scale pointer wants);
//  - *stats when non-null (zeroed by the launcher, then accumulated).
// rows, cols >= 0.
void CastToFp8(const __nv_bfloat16* in, int64_t rows, int64_t cols, Fp8Format format,
               const float* scale, uint8_t* out, uint8_t* out_t, float* scale_inv,
               Fp8CastStats* stats, cudaStream_t stream);
void CastToFp8(const float* in, int64_t rows, int64_t cols, Fp8Format format, const float* scale,
               uint8_t* out, uint8_t* out_t, float* scale_inv, Fp8CastStats* stats,
               cudaStream_t stream);

// Writes max |x| of n elements to *amax (NaN if any is NaN). Zeroes *amax first, on the stream.
void Fp8Amax(const __nv_bfloat16* in, int64_t n, float* amax, cudaStream_t stream);
void Fp8Amax(const float* in, int64_t n, float* amax, cudaStream_t stream);

// Current scaling: amax of this tensor, then scale = ComputeScale(amax, fp8_max, margin, 1)
// (core/fp8_scaling.h: 1 when amax is 0, NaN or inf or the result is not finite), then the cast.
// Writes *scale, *scale_inv and out/out_t/stats as CastToFp8 does. `stats` is required: its
// amax field carries the first kernel's result to the second.
void CurrentScaleCastToFp8(const __nv_bfloat16* in, int64_t rows, int64_t cols, Fp8Format format,
                           int margin, uint8_t* out, uint8_t* out_t, float* scale,
                           float* scale_inv, Fp8CastStats* stats, cudaStream_t stream);
void CurrentScaleCastToFp8(const float* in, int64_t rows, int64_t cols, Fp8Format format,
                           int margin, uint8_t* out, uint8_t* out_t, float* scale,
                           float* scale_inv, Fp8CastStats* stats, cudaStream_t stream);

// Rowwise: one scale per row, contraction along cols (cuBLASLt OUTER_VEC_32F). scale[r] =
// fp8_max / amax(row r), 1 when the amax is 0, NaN or inf, FLT_MAX when the division overflows
// (core's QuantizeDequantizeBlocks with blocks (1, cols)). Writes out [rows, cols],
// scale_inv[rows] = 1 / scale[r], scales[rows] when non-null, stats when non-null.
void RowwiseCastToFp8(const __nv_bfloat16* in, int64_t rows, int64_t cols, Fp8Format format,
                      uint8_t* out, float* scale_inv, float* scales, Fp8CastStats* stats,
                      cudaStream_t stream);
void RowwiseCastToFp8(const float* in, int64_t rows, int64_t cols, Fp8Format format, uint8_t* out,
                      float* scale_inv, float* scales, Fp8CastStats* stats, cudaStream_t stream);

// Number of 128-element blocks along a row, and of scales a 1x128 blockwise cast writes.
inline constexpr int64_t kFp8BlockCols = 128;
inline int64_t Fp8KBlocks(int64_t cols) { return (cols + kFp8BlockCols - 1) / kFp8BlockCols; }
inline int64_t Fp8BlockScaleCount(int64_t rows, int64_t cols) { return rows * Fp8KBlocks(cols); }

// 1x128 blockwise: one scale per 128 consecutive elements of a row (the last block of a row may
// be narrower and uses its own amax), same scale rule as rowwise. The scales are stored in the
// layout cuBLASLt's VEC128_32F reads: block kb of row r at [kb * rows + r] (k-block major, as
// tests/gpu/gemm_fp8_test.cu checks), for both scale_inv and scales (the latter when non-null).
void BlockwiseCastToFp8(const __nv_bfloat16* in, int64_t rows, int64_t cols, Fp8Format format,
                        uint8_t* out, float* scale_inv, float* scales, Fp8CastStats* stats,
                        cudaStream_t stream);
void BlockwiseCastToFp8(const float* in, int64_t rows, int64_t cols, Fp8Format format,
                        uint8_t* out, float* scale_inv, float* scales, Fp8CastStats* stats,
                        cudaStream_t stream);

// Transposed copies for the rowwise and blockwise recipes: quantize X^T [cols, rows] of the
// row-major X [rows, cols] with scales along the rows of X^T (columns of X), which is the
// contraction axis of the weight-gradient GEMM (dW = dY^T X takes dY^T and X^T). Same scale rule
// as RowwiseCastToFp8 / BlockwiseCastToFp8 applied to X^T, without materialising X^T in high
// precision: a column-amax kernel, the cast-transpose through shared-memory tiles, then a small
// kernel that turns the amaxes into scales.
//  - Rowwise: scale_inv[cols] (and scales[cols] when non-null), one per column of X.
//  - Blockwise: one scale per 128 rows of a column, column c's block kb at [kb * cols + c]
//    (the VEC128_32F layout of X^T, whose rows are X's columns); Fp8BlockScaleCount(cols, rows)
//    floats.
void TransposedRowwiseCastToFp8(const __nv_bfloat16* in, int64_t rows, int64_t cols,
                                Fp8Format format, uint8_t* out_t, float* scale_inv, float* scales,
                                Fp8CastStats* stats, cudaStream_t stream);
void TransposedRowwiseCastToFp8(const float* in, int64_t rows, int64_t cols, Fp8Format format,
                                uint8_t* out_t, float* scale_inv, float* scales,
                                Fp8CastStats* stats, cudaStream_t stream);
void TransposedBlockwiseCastToFp8(const __nv_bfloat16* in, int64_t rows, int64_t cols,
                                  Fp8Format format, uint8_t* out_t, float* scale_inv,
                                  float* scales, Fp8CastStats* stats, cudaStream_t stream);
void TransposedBlockwiseCastToFp8(const float* in, int64_t rows, int64_t cols, Fp8Format format,
                                  uint8_t* out_t, float* scale_inv, float* scales,
                                  Fp8CastStats* stats, cudaStream_t stream);

}  // namespace fp8d::kernels
