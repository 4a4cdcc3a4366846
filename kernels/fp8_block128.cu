#include "kernels/fp8_block128.cuh"

#include <cuda_fp8.h>

#include <cfloat>

#include "core/fp8_format.h"
#include "kernels/cuda_check.h"
#include "kernels/device_common.cuh"
#include "kernels/fp8_cast_device.cuh"

namespace fp8d::kernels {
namespace {

// 256 threads per tile: each warp reads 32 consecutive elements of a tile row at a time, so the
// loads of a warp are contiguous; a tile is 64 elements per thread.
constexpr int kThreads = 256;
constexpr int kWarps = kThreads / kWarpSize;

// core's BlockScale: 1 for amax 0, NaN or inf; FLT_MAX when fp8_max / amax overflows, so
// 1 / scale stays nonzero.
__device__ __forceinline__ float TileScale(float amax, float fp8_max) {
  if (!isfinite(amax) || !(amax > 0.f)) return 1.f;
  const float scale = fp8_max / amax;
  return isinf(scale) ? FLT_MAX : scale;
}

// |x| as bits: for non-negative floats the unsigned order is the numeric order and every NaN
// sorts above inf, so an integer max propagates NaN as core's Amax does.
__device__ __forceinline__ uint32_t AbsBits(float x) { return __float_as_uint(x) & 0x7fffffffu; }

// The scale of the h x w tile at (r0, c0) of a [*, cols] tensor, from its amax; every thread of
// the block must call it and gets the same value.
template <typename T>
__device__ float TileScaleOf(const T* __restrict__ in, int64_t cols, int64_t r0, int64_t c0,
                             int64_t h, int64_t w, float fp8_max) {
  __shared__ uint32_t warp_max[kWarps];
  const int lane = threadIdx.x % kWarpSize, warp = threadIdx.x / kWarpSize;
  uint32_t bits = 0;
  for (int64_t r = warp; r < h; r += kWarps) {
    const T* src = in + (r0 + r) * cols + c0;
    for (int64_t c = lane; c < w; c += kWarpSize) bits = max(bits, AbsBits(ToFloat(src[c])));
  }
  bits = __reduce_max_sync(0xffffffffu, bits);
  if (lane == 0) warp_max[warp] = bits;
  __syncthreads();
  bits = 0;
  for (int i = 0; i < kWarps; ++i) bits = max(bits, warp_max[i]);
  return TileScale(__uint_as_float(bits), fp8_max);
}

// One block per tile: the tile's amax, its scale, then the cast (the second read of the tile
// comes from L2). Weights are cast once per step, so this favours clarity over the last 10%.
template <typename T, bool kE4M3>
__global__ void Block128x128Kernel(const T* __restrict__ in, int64_t rows, int64_t cols,
                                   float fp8_max, Fp8TileScaleLayout layout,
                                   uint8_t* __restrict__ out, float* scale_inv, float* scales) {
  const int64_t tile_cols = Fp8TileCount(cols);
  const int64_t tile_row = blockIdx.x / tile_cols, tile_col = blockIdx.x % tile_cols;
  const int64_t r0 = tile_row * kFp8TileDim, c0 = tile_col * kFp8TileDim;
  const int64_t h = min(kFp8TileDim, rows - r0), w = min(kFp8TileDim, cols - c0);
  const int lane = threadIdx.x % kWarpSize, warp = threadIdx.x / kWarpSize;

  const float scale = TileScaleOf(in, cols, r0, c0, h, w, fp8_max);
  if (threadIdx.x == 0) {
    const int64_t at = Fp8TileScaleIndex(layout, rows, cols, tile_row, tile_col);
    scale_inv[at] = 1.0f / scale;
    if (scales != nullptr) scales[at] = scale;
  }

  for (int64_t r = warp; r < h; r += kWarps) {
    const T* src = in + (r0 + r) * cols + c0;
    uint8_t* dst = out + (r0 + r) * cols + c0;
    for (int64_t c = lane; c < w; c += kWarpSize) {
      dst[c] = __nv_cvt_float_to_fp8(ToFloat(src[c]) * scale, __NV_SATFINITE,
                                     kE4M3 ? __NV_E4M3 : __NV_E5M2);
    }
  }
}

// The weight cast an FP8 Linear needs: W's codes and tile scales, the transposed copy W^T [cols,
// rows] with the same tiles (so its codes are exactly W's transposed, staged through shared
// memory for coalesced rows) and its scales in the layout cuBLASLt reads for W^T, and the
// statistics of the cast. One block per tile.
template <typename T, bool kE4M3>
__global__ void Block128x128TransposeKernel(const T* __restrict__ in, int64_t rows, int64_t cols,
                                            float fp8_max, uint8_t* __restrict__ out,
                                            float* scale_inv, uint8_t* __restrict__ out_t,
                                            float* scale_inv_t, Fp8CastStats* stats) {
  __shared__ uint8_t tile[kFp8TileDim][kFp8TileDim + 4];
  const Fp8TileScaleLayout layout = kCublasLtTileScaleLayout;
  const int64_t tile_cols = Fp8TileCount(cols);
  const int64_t tile_row = blockIdx.x / tile_cols, tile_col = blockIdx.x % tile_cols;
  const int64_t r0 = tile_row * kFp8TileDim, c0 = tile_col * kFp8TileDim;
  const int64_t h = min(kFp8TileDim, rows - r0), w = min(kFp8TileDim, cols - c0);
  const int lane = threadIdx.x % kWarpSize, warp = threadIdx.x / kWarpSize;

  const float scale = TileScaleOf(in, cols, r0, c0, h, w, fp8_max);
  if (threadIdx.x == 0) {
    scale_inv[Fp8TileScaleIndex(layout, rows, cols, tile_row, tile_col)] = 1.0f / scale;
    scale_inv_t[Fp8TileScaleIndex(layout, cols, rows, tile_col, tile_row)] = 1.0f / scale;
  }
  fp8_device::LocalStats local;
  for (int64_t r = warp; r < h; r += kWarps) {
    const T* src = in + (r0 + r) * cols + c0;
    uint8_t* dst = out + (r0 + r) * cols + c0;
    for (int64_t c = lane; c < w; c += kWarpSize) {
      const float x = ToFloat(src[c]);
      const float scaled = x * scale;
      const uint8_t code = fp8_device::ToFp8<kE4M3>(scaled);
      dst[c] = code;
      tile[r][c] = code;
      local.Add(x, scaled, code, fp8_max);
    }
  }
  if (stats != nullptr) local.FlushBlock(stats);  // synchronises the block
  __syncthreads();
  for (int64_t c = warp; c < w; c += kWarps) {
    uint8_t* dst = out_t + (c0 + c) * rows + r0;
    for (int64_t r = lane; r < h; r += kWarpSize) dst[r] = tile[r][c];
  }
}

template <typename T>
void Block128x128Impl(const T* in, int64_t rows, int64_t cols, Fp8Format format,
                      Fp8TileScaleLayout layout, uint8_t* out, float* scale_inv, float* scales,
                      cudaStream_t stream) {
  FP8D_KERNELS_CHECK(rows >= 0 && cols >= 0);
  FP8D_KERNELS_CHECK(out != nullptr && scale_inv != nullptr);
  const int64_t tiles = Fp8TileCount(rows) * Fp8TileCount(cols);
  if (tiles == 0) return;
  // One block per tile: a 16k x 16k weight is 16384 tiles, far under the grid limit.
  FP8D_KERNELS_CHECK(tiles <= INT32_MAX);
  if (format == Fp8Format::kE4M3) {
    Block128x128Kernel<T, true><<<static_cast<unsigned>(tiles), kThreads, 0, stream>>>(
        in, rows, cols, kE4M3Max, layout, out, scale_inv, scales);
  } else {
    Block128x128Kernel<T, false><<<static_cast<unsigned>(tiles), kThreads, 0, stream>>>(
        in, rows, cols, kE5M2Max, layout, out, scale_inv, scales);
  }
  CUDA_CHECK_LAUNCH();
}

}  // namespace

void Block128x128CastToFp8(const __nv_bfloat16* in, int64_t rows, int64_t cols, Fp8Format format,
                           Fp8TileScaleLayout layout, uint8_t* out, float* scale_inv,
                           float* scales, cudaStream_t stream) {
  Block128x128Impl(in, rows, cols, format, layout, out, scale_inv, scales, stream);
}

void Block128x128CastToFp8(const float* in, int64_t rows, int64_t cols, Fp8Format format,
                           Fp8TileScaleLayout layout, uint8_t* out, float* scale_inv,
                           float* scales, cudaStream_t stream) {
  Block128x128Impl(in, rows, cols, format, layout, out, scale_inv, scales, stream);
}

template <typename T>
void Block128x128TransposeImpl(const T* in, int64_t rows, int64_t cols, Fp8Format format,
                               uint8_t* out, float* scale_inv, uint8_t* out_t, float* scale_inv_t,
                               Fp8CastStats* stats, cudaStream_t stream) {
  FP8D_KERNELS_CHECK(rows >= 0 && cols >= 0);
  FP8D_KERNELS_CHECK(out != nullptr && scale_inv != nullptr && out_t != nullptr &&
                     scale_inv_t != nullptr);
  if (stats != nullptr) CUDA_CHECK(cudaMemsetAsync(stats, 0, sizeof(Fp8CastStats), stream));
  const int64_t tiles = Fp8TileCount(rows) * Fp8TileCount(cols);
  if (tiles == 0) return;
  FP8D_KERNELS_CHECK(tiles <= INT32_MAX);
  if (format == Fp8Format::kE4M3) {
    Block128x128TransposeKernel<T, true><<<static_cast<unsigned>(tiles), kThreads, 0, stream>>>(
        in, rows, cols, kE4M3Max, out, scale_inv, out_t, scale_inv_t, stats);
  } else {
    Block128x128TransposeKernel<T, false><<<static_cast<unsigned>(tiles), kThreads, 0, stream>>>(
        in, rows, cols, kE5M2Max, out, scale_inv, out_t, scale_inv_t, stats);
  }
  CUDA_CHECK_LAUNCH();
}

void Block128x128CastTransposeToFp8(const __nv_bfloat16* in, int64_t rows, int64_t cols,
                                    Fp8Format format, uint8_t* out, float* scale_inv,
                                    uint8_t* out_t, float* scale_inv_t, Fp8CastStats* stats,
                                    cudaStream_t stream) {
  Block128x128TransposeImpl(in, rows, cols, format, out, scale_inv, out_t, scale_inv_t, stats,
                            stream);
}
void Block128x128CastTransposeToFp8(const float* in, int64_t rows, int64_t cols,
                                    Fp8Format format, uint8_t* out, float* scale_inv,
                                    uint8_t* out_t, float* scale_inv_t, Fp8CastStats* stats,
                                    cudaStream_t stream) {
  Block128x128TransposeImpl(in, rows, cols, format, out, scale_inv, out_t, scale_inv_t, stats,
                            stream);
}

}  // namespace fp8d::kernels
