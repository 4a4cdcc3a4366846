#include "kernels/fp8_block128.cuh"

#include <cuda_fp8.h>

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
    for (int64_t c = lane; c < w; c += kWarpSize) {
      bits = max(bits, fp8_device::AbsBits(ToFloat(src[c])));
    }
  }
  bits = __reduce_max_sync(0xffffffffu, bits);
  if (lane == 0) warp_max[warp] = bits;
  __syncthreads();
  bits = 0;
  for (int i = 0; i < kWarps; ++i) bits = max(bits, warp_max[i]);
  return fp8_device::BlockScale(__uint_as_float(bits), fp8_max);
}

// One block per tile: the tile's amax, its scale, then the cast (the second read of the tile
// comes from L2); weights are cast once per step. Scales go to `layout` over [rows, cols]. With
// out_t, also the transposed copy W^T [cols, rows] with the same tiles (so its codes are exactly
// W's transposed, staged through shared memory for coalesced rows) and its scales in `layout`
// over [cols, rows]. With stats, the cast's statistics.
template <typename T, bool kE4M3>
__global__ void Block128x128Kernel(const T* __restrict__ in, int64_t rows, int64_t cols,
                                   float fp8_max, Fp8TileScaleLayout layout,
                                   uint8_t* __restrict__ out, float* scale_inv, float* scales,
                                   uint8_t* __restrict__ out_t, float* scale_inv_t,
                                   Fp8CastStats* stats) {
  __shared__ uint8_t tile[kFp8TileDim][kFp8TileDim + 4];
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
    if (out_t != nullptr) {
      scale_inv_t[Fp8TileScaleIndex(layout, cols, rows, tile_col, tile_row)] = 1.0f / scale;
    }
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
  if (stats != nullptr) local.FlushBlock(stats);
  if (out_t == nullptr) return;  // uniform across the block
  __syncthreads();
  for (int64_t c = warp; c < w; c += kWarps) {
    uint8_t* dst = out_t + (c0 + c) * rows + r0;
    for (int64_t r = lane; r < h; r += kWarpSize) dst[r] = tile[r][c];
  }
}

template <typename T>
void Block128x128Impl(const T* in, int64_t rows, int64_t cols, Fp8Format format,
                      Fp8TileScaleLayout layout, uint8_t* out, float* scale_inv, float* scales,
                      uint8_t* out_t, float* scale_inv_t, Fp8CastStats* stats,
                      cudaStream_t stream) {
  FP8D_KERNELS_CHECK(rows >= 0 && cols >= 0);
  FP8D_KERNELS_CHECK(out != nullptr && scale_inv != nullptr);
  FP8D_KERNELS_CHECK(out_t == nullptr || scale_inv_t != nullptr);
  if (stats != nullptr) CUDA_CHECK(cudaMemsetAsync(stats, 0, sizeof(Fp8CastStats), stream));
  const int64_t tiles = Fp8TileCount(rows) * Fp8TileCount(cols);
  if (tiles == 0) return;
  // One block per tile: a 16k x 16k weight is 16384 tiles, far under the grid limit.
  FP8D_KERNELS_CHECK(tiles <= INT32_MAX);
  if (format == Fp8Format::kE4M3) {
    Block128x128Kernel<T, true><<<static_cast<unsigned>(tiles), kThreads, 0, stream>>>(
        in, rows, cols, kE4M3Max, layout, out, scale_inv, scales, out_t, scale_inv_t, stats);
  } else {
    Block128x128Kernel<T, false><<<static_cast<unsigned>(tiles), kThreads, 0, stream>>>(
        in, rows, cols, kE5M2Max, layout, out, scale_inv, scales, out_t, scale_inv_t, stats);
  }
  CUDA_CHECK_LAUNCH();
}

}  // namespace

void Block128x128CastToFp8(const __nv_bfloat16* in, int64_t rows, int64_t cols, Fp8Format format,
                           Fp8TileScaleLayout layout, uint8_t* out, float* scale_inv,
                           float* scales, cudaStream_t stream) {
  Block128x128Impl(in, rows, cols, format, layout, out, scale_inv, scales, nullptr, nullptr,
                   nullptr, stream);
}

void Block128x128CastToFp8(const float* in, int64_t rows, int64_t cols, Fp8Format format,
                           Fp8TileScaleLayout layout, uint8_t* out, float* scale_inv,
                           float* scales, cudaStream_t stream) {
  Block128x128Impl(in, rows, cols, format, layout, out, scale_inv, scales, nullptr, nullptr,
                   nullptr, stream);
}

void Block128x128CastTransposeToFp8(const __nv_bfloat16* in, int64_t rows, int64_t cols,
                                    Fp8Format format, uint8_t* out, float* scale_inv,
                                    uint8_t* out_t, float* scale_inv_t, Fp8CastStats* stats,
                                    cudaStream_t stream) {
  FP8D_KERNELS_CHECK(out_t != nullptr);
  Block128x128Impl(in, rows, cols, format, kCublasLtTileScaleLayout, out, scale_inv, nullptr,
                   out_t, scale_inv_t, stats, stream);
}
void Block128x128CastTransposeToFp8(const float* in, int64_t rows, int64_t cols,
                                    Fp8Format format, uint8_t* out, float* scale_inv,
                                    uint8_t* out_t, float* scale_inv_t, Fp8CastStats* stats,
                                    cudaStream_t stream) {
  FP8D_KERNELS_CHECK(out_t != nullptr);
  Block128x128Impl(in, rows, cols, format, kCublasLtTileScaleLayout, out, scale_inv, nullptr,
                   out_t, scale_inv_t, stats, stream);
}

}  // namespace fp8d::kernels
