// FP8 cast of a weight with one scale per 128x128 tile (DeepSeek-V3 style weight blocks), the
// device side of core's QuantizeDequantizeBlocks(..., 128, 128, ...): for each tile,
//   scale = fp8_max / amax(tile)  (1 when amax is 0, NaN or inf; FLT_MAX when it overflows),
//   q     = __nv_cvt_float_to_fp8(float(x) * scale, __NV_SATFINITE, format),
// so the codes match the CPU emulation byte for byte. Edge tiles of a size that is not a
// multiple of 128 use their own amax, as on the CPU.
//
// The GEMM consumes these scales through cuBLASLt's BLK128x128_32F mode (Fp8ScaleMode::
// kBlock128x128 in gemm_fp8.h), whose scale-array layout the documentation only sketches
// ("K-major", leading dimension a multiple of 4). The layout is therefore a parameter here, so
// tests/gpu/gemm_fp8_block128_test.cu can write every plausible one and let the GEMM say which it
// reads; kCublasLtTileScaleLayout names the expected one.
#pragma once

#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <cstdint>

#include "core/recipe_config.h"
#include "kernels/fp8_cast.cuh"

namespace fp8d::kernels {

inline constexpr int64_t kFp8TileDim = 128;

// Tiles along each axis of a [rows, cols] tensor (the last ones may be partial).
__host__ __device__ inline int64_t Fp8TileCount(int64_t extent) {
  return (extent + kFp8TileDim - 1) / kFp8TileDim;
}

// Which tile index runs fastest in the scale array of a row-major [rows, cols] tensor.
enum class Fp8TileOrder {
  kTileRowMajor,  // [tile_row][tile_col]: tiles along cols (the contraction axis) contiguous
  kTileColMajor,  // [tile_col][tile_row]
};

struct Fp8TileScaleLayout {
  Fp8TileOrder order = Fp8TileOrder::kTileRowMajor;
  // The contiguous extent (tile_cols for row-major, tile_rows for col-major) is rounded up to a
  // multiple of this to give the stride between consecutive outer indices; 1 packs the tiles.
  int64_t stride_multiple = 4;
};

// What cuBLASLt 13.1's BLK128x128_32F is expected to read for the weight operand W [n, k]
// (cuBLASLt's A, contracted along k): tiles along k contiguous ("K-major"), one row of tiles per
// 128 rows of W, each row of tiles padded to a multiple of 4 floats.
inline constexpr Fp8TileScaleLayout kCublasLtTileScaleLayout{Fp8TileOrder::kTileRowMajor, 4};

// Distance between consecutive outer indices of the scale array.
__host__ __device__ inline int64_t Fp8TileScaleStride(Fp8TileScaleLayout layout, int64_t rows,
                                                      int64_t cols) {
  const int64_t inner = layout.order == Fp8TileOrder::kTileRowMajor ? Fp8TileCount(cols)
                                                                     : Fp8TileCount(rows);
  const int64_t m = layout.stride_multiple > 0 ? layout.stride_multiple : 1;
  return (inner + m - 1) / m * m;
}

// Position of tile (tile_row, tile_col)'s scale.
__host__ __device__ inline int64_t Fp8TileScaleIndex(Fp8TileScaleLayout layout, int64_t rows,
                                                     int64_t cols, int64_t tile_row,
                                                     int64_t tile_col) {
  const int64_t stride = Fp8TileScaleStride(layout, rows, cols);
  return layout.order == Fp8TileOrder::kTileRowMajor ? tile_row * stride + tile_col
                                                     : tile_col * stride + tile_row;
}

// Floats a scale array of this layout spans, padding included.
__host__ __device__ inline int64_t Fp8TileScaleCount(Fp8TileScaleLayout layout, int64_t rows,
                                                     int64_t cols) {
  const int64_t outer = layout.order == Fp8TileOrder::kTileRowMajor ? Fp8TileCount(rows)
                                                                     : Fp8TileCount(cols);
  return outer * Fp8TileScaleStride(layout, rows, cols);
}

// Casts a row-major [rows, cols] tensor (rows, cols >= 0) into out [rows, cols] FP8 codes with one
// scale per 128x128 tile. Writes scale_inv (1 / scale, what the GEMM's scale pointer wants) and,
// when non-null, scales, both at Fp8TileScaleIndex(layout, ...); padding entries of the arrays
// are left as they were. One thread block per tile.
void Block128x128CastToFp8(const __nv_bfloat16* in, int64_t rows, int64_t cols, Fp8Format format,
                           Fp8TileScaleLayout layout, uint8_t* out, float* scale_inv,
                           float* scales, cudaStream_t stream);
void Block128x128CastToFp8(const float* in, int64_t rows, int64_t cols, Fp8Format format,
                           Fp8TileScaleLayout layout, uint8_t* out, float* scale_inv,
                           float* scales, cudaStream_t stream);

// What an FP8 Linear's weight cache needs (kernels/fp8_linear.h, 128x128 weight tiles): W's codes
// and scale_inv in kCublasLtTileScaleLayout over [rows, cols]; W^T's codes [cols, rows] (exactly
// W's transposed: the tiles and their scales are the same) and scale_inv in that layout over
// [cols, rows]; and the cast's statistics (overwritten; may be null), as core's QuantStats.
void Block128x128CastTransposeToFp8(const __nv_bfloat16* in, int64_t rows, int64_t cols,
                                    Fp8Format format, uint8_t* out, float* scale_inv,
                                    uint8_t* out_t, float* scale_inv_t, Fp8CastStats* stats,
                                    cudaStream_t stream);
void Block128x128CastTransposeToFp8(const float* in, int64_t rows, int64_t cols,
                                    Fp8Format format, uint8_t* out, float* scale_inv,
                                    uint8_t* out_t, float* scale_inv_t, Fp8CastStats* stats,
                                    cudaStream_t stream);

}  // namespace fp8d::kernels
