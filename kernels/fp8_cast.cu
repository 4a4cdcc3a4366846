#include "kernels/fp8_cast.cuh"

#include <cuda_fp8.h>

#include <algorithm>

#include "core/fp8_format.h"
#include "kernels/cuda_check.h"
#include "kernels/delayed_scaling.cuh"
#include "kernels/device_common.cuh"
#include "kernels/fp8_cast_device.cuh"

namespace fp8d::kernels {
namespace {

using fp8_device::AbsBits;
using fp8_device::BlockScale;
using fp8_device::CastTransposeTiledKernel;
using fp8_device::kFastThreads;
using fp8_device::kFastTile;
using fp8_device::kFullMask;
using fp8_device::kPersistentBlocks;
using fp8_device::LocalStats;
using fp8_device::MemoryLoader;
using fp8_device::TensorScale;
using fp8_device::TiledGrid;
using fp8_device::ToFp8;

constexpr int kThreads = 256;
constexpr int kMaxGridStrideBlocks = 4096;

// Cast + transpose tiles: 32x32 elements, 32x8 threads, each thread handles 4 rows of the tile.
constexpr int kTile = 32;
constexpr int kTileRowsPerPass = 8;

bool FitsTiledCastTranspose(const void* in, int64_t rows, int64_t cols, const uint8_t* out,
                            const uint8_t* out_t) {
  return rows % kFastTile == 0 && cols % kFastTile == 0 &&
         reinterpret_cast<uintptr_t>(in) % 16 == 0 && reinterpret_cast<uintptr_t>(out) % 8 == 0 &&
         reinterpret_cast<uintptr_t>(out_t) % 8 == 0;
}


int GridStrideBlocks(int64_t n) {
  return static_cast<int>(std::clamp<int64_t>(CeilDiv(n, kThreads), 1, kMaxGridStrideBlocks));
}

// Per-tensor cast of n elements, no transpose. With `amax_for_scale` non-null the scale is
// derived here from the tensor's amax (current scaling) and block 0 publishes it.
template <typename T, bool kE4M3>
__global__ void CastKernel(const T* __restrict__ in, int64_t n, const float* scale_ptr,
                           const float* amax_for_scale, int margin, float fp8_max,
                           uint8_t* __restrict__ out, float* scale_out, float* scale_inv,
                           Fp8CastStats* stats) {
  const float scale =
      TensorScale(scale_ptr, amax_for_scale, margin, fp8_max, scale_out, scale_inv);
  LocalStats local;
  const int64_t first = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
  // 16-byte loads (8 BF16 or 4 FP32) and one store of their codes when the pointers allow it;
  // the tail, or everything for misaligned pointers, goes one element at a time.
  constexpr int kVec = 16 / sizeof(T);
  const bool aligned = reinterpret_cast<uintptr_t>(in) % 16 == 0 &&
                       reinterpret_cast<uintptr_t>(out) % kVec == 0;
  const int64_t n_vec = aligned ? n / kVec : 0;
  for (int64_t v = first; v < n_vec; v += stride) {
    alignas(16) T vals[kVec];
    alignas(8) uint8_t codes[kVec];
    *reinterpret_cast<uint4*>(vals) = reinterpret_cast<const uint4*>(in)[v];
#pragma unroll
    for (int j = 0; j < kVec; ++j) {
      const float x = ToFloat(vals[j]);
      const float scaled = x * scale;
      codes[j] = ToFp8<kE4M3>(scaled);
      local.Add(x, scaled, codes[j], fp8_max);
    }
    if constexpr (kVec == 8) {
      reinterpret_cast<uint2*>(out)[v] = *reinterpret_cast<const uint2*>(codes);
    } else {
      reinterpret_cast<uint32_t*>(out)[v] = *reinterpret_cast<const uint32_t*>(codes);
    }
  }
  for (int64_t i = n_vec * kVec + first; i < n; i += stride) {
    const float x = ToFloat(in[i]);
    const float scaled = x * scale;
    const uint8_t code = ToFp8<kE4M3>(scaled);
    out[i] = code;
    local.Add(x, scaled, code, fp8_max);
  }
  if (stats != nullptr) local.FlushBlock(stats);
}

// Cast + transpose through a shared-memory tile: each input element is read once, its code is
// written to `out` and, from the tile, to `out_t` with coalesced rows of the transpose.
template <typename T, bool kE4M3>
__global__ void CastTransposeKernel(const T* __restrict__ in, int64_t rows, int64_t cols,
                                    const float* scale_ptr, const float* amax_for_scale,
                                    int margin, float fp8_max, uint8_t* __restrict__ out,
                                    uint8_t* __restrict__ out_t, float* scale_out,
                                    float* scale_inv, Fp8CastStats* stats) {
  __shared__ uint8_t tile[kTile][kTile + 4];  // padded against bank conflicts on the transpose
  const float scale =
      TensorScale(scale_ptr, amax_for_scale, margin, fp8_max, scale_out, scale_inv);
  const int64_t tiles_across = CeilDiv(cols, kTile);
  const int64_t r0 = (blockIdx.x / tiles_across) * kTile;
  const int64_t c0 = (blockIdx.x % tiles_across) * kTile;
  const int tx = threadIdx.x, ty = threadIdx.y;

  LocalStats local;
#pragma unroll
  for (int j = 0; j < kTile / kTileRowsPerPass; ++j) {
    const int64_t r = r0 + ty + j * kTileRowsPerPass;
    const int64_t c = c0 + tx;
    if (r < rows && c < cols) {
      const float x = ToFloat(in[r * cols + c]);
      const float scaled = x * scale;
      const uint8_t code = ToFp8<kE4M3>(scaled);
      out[r * cols + c] = code;
      tile[ty + j * kTileRowsPerPass][tx] = code;
      local.Add(x, scaled, code, fp8_max);
    }
  }
  if (stats != nullptr) local.FlushBlock(stats);
  if (out_t == nullptr) return;
  __syncthreads();
#pragma unroll
  for (int j = 0; j < kTile / kTileRowsPerPass; ++j) {
    const int64_t tr = c0 + ty + j * kTileRowsPerPass;  // row of out_t = column of in
    const int64_t tc = r0 + tx;
    if (tr < cols && tc < rows) out_t[tr * rows + tc] = tile[tx][ty + j * kTileRowsPerPass];
  }
}

template <typename T>
__global__ void AmaxKernel(const T* __restrict__ in, int64_t n, float* amax) {
  uint32_t bits = 0;
  const int64_t first = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
  constexpr int kVec = 16 / sizeof(T);
  const int64_t n_vec = reinterpret_cast<uintptr_t>(in) % 16 == 0 ? n / kVec : 0;
  for (int64_t v = first; v < n_vec; v += stride) {
    alignas(16) T vals[kVec];
    *reinterpret_cast<uint4*>(vals) = reinterpret_cast<const uint4*>(in)[v];
#pragma unroll
    for (int j = 0; j < kVec; ++j) bits = max(bits, AbsBits(ToFloat(vals[j])));
  }
  for (int64_t i = n_vec * kVec + first; i < n; i += stride) {
    bits = max(bits, AbsBits(ToFloat(in[i])));
  }
  bits = __reduce_max_sync(kFullMask, bits);
  // One atomic per block (see LocalStats::FlushBlock).
  __shared__ uint32_t warp_max[kThreads / kWarpSize];
  if (threadIdx.x % kWarpSize == 0) warp_max[threadIdx.x / kWarpSize] = bits;
  __syncthreads();
  if (threadIdx.x == 0) {
    for (int w = 1; w < kThreads / kWarpSize; ++w) bits = max(bits, warp_max[w]);
    atomicMax(reinterpret_cast<unsigned int*>(amax), bits);
  }
}

// One block per row: the row's amax, its scale, then the cast (the second read of the row comes
// from L1/L2).
template <typename T, bool kE4M3>
__global__ void RowwiseKernel(const T* __restrict__ in, int64_t rows, int64_t cols,
                              float fp8_max, uint8_t* __restrict__ out, float* scale_inv,
                              float* scales, Fp8CastStats* stats) {
  __shared__ uint32_t warp_max[kThreads / kWarpSize];
  LocalStats local;
  // Blocks loop over rows so each flushes its statistics once.
  for (int64_t r = blockIdx.x; r < rows; r += gridDim.x) {
    const T* row = in + r * cols;
    uint32_t bits = 0;
    for (int64_t c = threadIdx.x; c < cols; c += blockDim.x) {
      bits = max(bits, AbsBits(ToFloat(row[c])));
    }
    bits = __reduce_max_sync(kFullMask, bits);
    if (threadIdx.x % kWarpSize == 0) warp_max[threadIdx.x / kWarpSize] = bits;
    __syncthreads();
    bits = 0;
    for (int w = 0; w < kThreads / kWarpSize; ++w) bits = max(bits, warp_max[w]);
    __syncthreads();  // warp_max is rewritten by the next row
    const float scale = BlockScale(__uint_as_float(bits), fp8_max);
    if (threadIdx.x == 0) {
      scale_inv[r] = 1.0f / scale;
      if (scales != nullptr) scales[r] = scale;
    }
    for (int64_t c = threadIdx.x; c < cols; c += blockDim.x) {
      const float x = ToFloat(row[c]);
      const float scaled = x * scale;
      const uint8_t code = ToFp8<kE4M3>(scaled);
      out[r * cols + c] = code;
      local.Add(x, scaled, code, fp8_max);
    }
  }
  if (stats != nullptr) local.FlushBlock(stats);
}

// One warp per 128-element block of a row, 4 elements per lane (lane, lane + 32, ...), so each
// load instruction of the warp is contiguous.
template <typename T, bool kE4M3>
__global__ void BlockwiseKernel(const T* __restrict__ in, int64_t rows, int64_t cols,
                                float fp8_max, uint8_t* __restrict__ out, float* scale_inv,
                                float* scales, Fp8CastStats* stats) {
  constexpr int kPerLane = kFp8BlockCols / kWarpSize;
  const int64_t k_blocks = CeilDiv(cols, kFp8BlockCols);
  const int warps = blockDim.x / kWarpSize;
  const int lane = threadIdx.x % kWarpSize;
  LocalStats local;
  // Warps loop over the 128-element blocks so each thread block flushes its statistics once.
  for (int64_t block = static_cast<int64_t>(blockIdx.x) * warps + threadIdx.x / kWarpSize;
       block < rows * k_blocks; block += static_cast<int64_t>(gridDim.x) * warps) {
    const int64_t r = block / k_blocks, kb = block % k_blocks;
    const int64_t c0 = kb * kFp8BlockCols;
    const T* src = in + r * cols;

    float x[kPerLane];
    uint32_t bits = 0;
  #pragma unroll
    for (int j = 0; j < kPerLane; ++j) {
      const int64_t c = c0 + lane + j * kWarpSize;
      x[j] = c < cols ? ToFloat(src[c]) : 0.f;
      bits = max(bits, AbsBits(x[j]));
    }
    bits = __reduce_max_sync(kFullMask, bits);
    const float scale = BlockScale(__uint_as_float(bits), fp8_max);
    if (lane == 0) {
      scale_inv[kb * rows + r] = 1.0f / scale;
      if (scales != nullptr) scales[kb * rows + r] = scale;
    }
  #pragma unroll
    for (int j = 0; j < kPerLane; ++j) {
      const int64_t c = c0 + lane + j * kWarpSize;
      if (c < cols) {
        const float scaled = x[j] * scale;
        const uint8_t code = ToFp8<kE4M3>(scaled);
        out[r * cols + c] = code;
        local.Add(x[j], scaled, code, fp8_max);
      }
    }
  }
  if (stats != nullptr) local.FlushBlock(stats);
}

// Transposed rowwise/blockwise casts, step 1: per column, the amax of each block of
// `block_rows` rows, as |x| bit patterns max-combined into amax_bits[block * cols + c]. Tiles of
// 128 rows x 32 columns; block_rows is a multiple of 128 or covers all rows, so a tile never
// straddles two blocks.
constexpr int kAmaxTileRows = 128;

template <typename T>
__global__ void ColumnBlockAmaxKernel(const T* __restrict__ in, int64_t rows, int64_t cols,
                                      int64_t block_rows, uint32_t* amax_bits) {
  __shared__ uint32_t partial[kTileRowsPerPass][kTile];
  const int64_t tiles_across = CeilDiv(cols, kTile);
  const int64_t r0 = (blockIdx.x / tiles_across) * kAmaxTileRows;
  const int64_t c = (blockIdx.x % tiles_across) * kTile + threadIdx.x;
  uint32_t bits = 0;
  if (c < cols) {
    for (int j = 0; j < kAmaxTileRows / kTileRowsPerPass; ++j) {
      const int64_t r = r0 + threadIdx.y + j * kTileRowsPerPass;
      if (r < rows) bits = max(bits, AbsBits(ToFloat(in[r * cols + c])));
    }
  }
  partial[threadIdx.y][threadIdx.x] = bits;
  __syncthreads();
  if (threadIdx.y == 0 && c < cols) {
    for (int i = 1; i < kTileRowsPerPass; ++i) bits = max(bits, partial[i][threadIdx.x]);
    atomicMax(&amax_bits[(r0 / block_rows) * cols + c], bits);
  }
}

// Step 2: cast-transpose with the scale of each column's block (32-row tiles sit inside one
// block), writing only X^T's codes.
template <typename T, bool kE4M3>
__global__ void TransposedCastKernel(const T* __restrict__ in, int64_t rows, int64_t cols,
                                     int64_t block_rows, const uint32_t* amax_bits, float fp8_max,
                                     uint8_t* __restrict__ out_t, Fp8CastStats* stats) {
  __shared__ uint8_t tile[kTile][kTile + 4];
  const int64_t tiles_across = CeilDiv(cols, kTile);
  const int64_t r0 = (blockIdx.x / tiles_across) * kTile;
  const int64_t c0 = (blockIdx.x % tiles_across) * kTile;
  const int tx = threadIdx.x, ty = threadIdx.y;
  const int64_t c = c0 + tx;
  const float scale =
      c < cols ? BlockScale(__uint_as_float(amax_bits[(r0 / block_rows) * cols + c]), fp8_max)
               : 1.f;
  LocalStats local;
#pragma unroll
  for (int j = 0; j < kTile / kTileRowsPerPass; ++j) {
    const int64_t r = r0 + ty + j * kTileRowsPerPass;
    if (r < rows && c < cols) {
      const float x = ToFloat(in[r * cols + c]);
      const float scaled = x * scale;
      const uint8_t code = ToFp8<kE4M3>(scaled);
      tile[ty + j * kTileRowsPerPass][tx] = code;
      local.Add(x, scaled, code, fp8_max);
    }
  }
  if (stats != nullptr) local.FlushBlock(stats);
  __syncthreads();
#pragma unroll
  for (int j = 0; j < kTile / kTileRowsPerPass; ++j) {
    const int64_t tr = c0 + ty + j * kTileRowsPerPass;
    const int64_t tc = r0 + tx;
    if (tr < cols && tc < rows) out_t[tr * rows + tc] = tile[tx][ty + j * kTileRowsPerPass];
  }
}

// Step 3: amax bits (stored in scale_inv) -> scale_inv = 1 / scale, and scales when asked.
__global__ void FinalizeBlockScalesKernel(int64_t n, float fp8_max, float* scale_inv,
                                          float* scales) {
  const int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= n) return;
  const float scale = BlockScale(scale_inv[i], fp8_max);
  scale_inv[i] = 1.0f / scale;
  if (scales != nullptr) scales[i] = scale;
}

void ZeroStats(Fp8CastStats* stats, cudaStream_t stream) {
  if (stats != nullptr) CUDA_CHECK(cudaMemsetAsync(stats, 0, sizeof(Fp8CastStats), stream));
}

// Shared body of CastToFp8 and the second kernel of CurrentScaleCastToFp8.
template <typename T, bool kE4M3>
void LaunchCast(const T* in, int64_t rows, int64_t cols, const float* scale,
                const float* amax_for_scale, int margin, uint8_t* out, uint8_t* out_t,
                float* scale_out, float* scale_inv, Fp8CastStats* stats, cudaStream_t stream) {
  const float fp8_max = kE4M3 ? kE4M3Max : kE5M2Max;
  if (out_t == nullptr) {
    const int64_t n = rows * cols;
    const int64_t per_thread = 16 / sizeof(T);  // elements of one vector load
    CastKernel<T, kE4M3><<<GridStrideBlocks(CeilDiv(n, per_thread)), kThreads, 0, stream>>>(
        in, n, scale, amax_for_scale, margin, fp8_max, out, scale_out, scale_inv, stats);
  } else if (FitsTiledCastTranspose(in, rows, cols, out, out_t)) {
    CastTransposeTiledKernel<MemoryLoader<T>, kE4M3>
        <<<TiledGrid(rows, cols), kFastThreads, 0, stream>>>(
            MemoryLoader<T>{in, cols}, rows, cols, scale, amax_for_scale, margin, fp8_max, out,
            out_t, scale_out, scale_inv, stats);
  } else {
    const int64_t tiles = std::max<int64_t>(1, CeilDiv(rows, kTile) * CeilDiv(cols, kTile));
    FP8D_KERNELS_CHECK(tiles <= int64_t{0x7fffffff});
    const dim3 block(kTile, kTileRowsPerPass);
    CastTransposeKernel<T, kE4M3><<<static_cast<unsigned>(tiles), block, 0, stream>>>(
        in, rows, cols, scale, amax_for_scale, margin, fp8_max, out, out_t, scale_out, scale_inv,
        stats);
  }
  CUDA_CHECK_LAUNCH();
}

template <typename T>
void CastToFp8Impl(const T* in, int64_t rows, int64_t cols, Fp8Format format, const float* scale,
                   uint8_t* out, uint8_t* out_t, float* scale_inv, Fp8CastStats* stats,
                   cudaStream_t stream) {
  FP8D_KERNELS_CHECK(rows >= 0 && cols >= 0 && scale != nullptr && out != nullptr);
  ZeroStats(stats, stream);
  if (format == Fp8Format::kE4M3) {
    LaunchCast<T, true>(in, rows, cols, scale, nullptr, 0, out, out_t, nullptr, scale_inv, stats,
                        stream);
  } else {
    LaunchCast<T, false>(in, rows, cols, scale, nullptr, 0, out, out_t, nullptr, scale_inv, stats,
                         stream);
  }
}

template <typename T>
void AmaxImpl(const T* in, int64_t n, float* amax, cudaStream_t stream) {
  FP8D_KERNELS_CHECK(n >= 0 && amax != nullptr);
  CUDA_CHECK(cudaMemsetAsync(amax, 0, sizeof(float), stream));
  if (n == 0) return;
  AmaxKernel<T><<<GridStrideBlocks(n), kThreads, 0, stream>>>(in, n, amax);
  CUDA_CHECK_LAUNCH();
}

template <typename T>
void CurrentScaleCastImpl(const T* in, int64_t rows, int64_t cols, Fp8Format format, int margin,
                          uint8_t* out, uint8_t* out_t, float* scale, float* scale_inv,
                          Fp8CastStats* stats, cudaStream_t stream) {
  FP8D_KERNELS_CHECK(rows >= 0 && cols >= 0 && out != nullptr && stats != nullptr);
  ZeroStats(stats, stream);
  const int64_t n = rows * cols;
  if (n > 0) {
    AmaxKernel<T><<<GridStrideBlocks(n), kThreads, 0, stream>>>(in, n, &stats->amax);
    CUDA_CHECK_LAUNCH();
  }
  // The cast kernel folds the same elements into stats->amax again, which leaves the max
  // unchanged, and adds the counts the amax kernel did not touch.
  if (format == Fp8Format::kE4M3) {
    LaunchCast<T, true>(in, rows, cols, nullptr, &stats->amax, margin, out, out_t, scale,
                        scale_inv, stats, stream);
  } else {
    LaunchCast<T, false>(in, rows, cols, nullptr, &stats->amax, margin, out, out_t, scale,
                         scale_inv, stats, stream);
  }
}

template <typename T>
void RowwiseImpl(const T* in, int64_t rows, int64_t cols, Fp8Format format, uint8_t* out,
                 float* scale_inv, float* scales, Fp8CastStats* stats, cudaStream_t stream) {
  FP8D_KERNELS_CHECK(rows >= 0 && cols >= 0 && rows <= int64_t{0x7fffffff});
  FP8D_KERNELS_CHECK(out != nullptr && scale_inv != nullptr);
  ZeroStats(stats, stream);
  if (rows == 0) return;
  const auto grid = static_cast<unsigned>(std::min<int64_t>(rows, kPersistentBlocks));
  if (format == Fp8Format::kE4M3) {
    RowwiseKernel<T, true><<<grid, kThreads, 0, stream>>>(in, rows, cols, kE4M3Max, out,
                                                          scale_inv, scales, stats);
  } else {
    RowwiseKernel<T, false><<<grid, kThreads, 0, stream>>>(in, rows, cols, kE5M2Max, out,
                                                           scale_inv, scales, stats);
  }
  CUDA_CHECK_LAUNCH();
}

template <typename T>
void BlockwiseImpl(const T* in, int64_t rows, int64_t cols, Fp8Format format, uint8_t* out,
                   float* scale_inv, float* scales, Fp8CastStats* stats, cudaStream_t stream) {
  FP8D_KERNELS_CHECK(rows >= 0 && cols >= 0);
  FP8D_KERNELS_CHECK(out != nullptr && scale_inv != nullptr);
  ZeroStats(stats, stream);
  const int64_t n_blocks = Fp8BlockScaleCount(rows, cols);
  if (n_blocks == 0) return;
  constexpr int kWarpsPerBlock = kThreads / kWarpSize;
  const int64_t grid = std::min<int64_t>(CeilDiv(n_blocks, kWarpsPerBlock), kPersistentBlocks);
  if (format == Fp8Format::kE4M3) {
    BlockwiseKernel<T, true><<<static_cast<unsigned>(grid), kThreads, 0, stream>>>(
        in, rows, cols, kE4M3Max, out, scale_inv, scales, stats);
  } else {
    BlockwiseKernel<T, false><<<static_cast<unsigned>(grid), kThreads, 0, stream>>>(
        in, rows, cols, kE5M2Max, out, scale_inv, scales, stats);
  }
  CUDA_CHECK_LAUNCH();
}

template <typename T>
void TransposedBlocksImpl(const T* in, int64_t rows, int64_t cols, int64_t block_rows,
                          Fp8Format format, uint8_t* out_t, float* scale_inv, float* scales,
                          Fp8CastStats* stats, cudaStream_t stream) {
  FP8D_KERNELS_CHECK(rows >= 0 && cols >= 0 && block_rows > 0);
  FP8D_KERNELS_CHECK(block_rows % kAmaxTileRows == 0 || block_rows >= rows);
  FP8D_KERNELS_CHECK(out_t != nullptr && scale_inv != nullptr);
  ZeroStats(stats, stream);
  const int64_t n_scales = CeilDiv(rows, block_rows) * cols;
  if (n_scales == 0) return;
  // scale_inv holds the amax bit patterns until step 3 replaces them.
  uint32_t* amax_bits = reinterpret_cast<uint32_t*>(scale_inv);
  CUDA_CHECK(cudaMemsetAsync(amax_bits, 0, n_scales * sizeof(float), stream));
  const float fp8_max = format == Fp8Format::kE4M3 ? kE4M3Max : kE5M2Max;
  const dim3 block(kTile, kTileRowsPerPass);
  const int64_t amax_tiles = CeilDiv(rows, kAmaxTileRows) * CeilDiv(cols, kTile);
  const int64_t cast_tiles = CeilDiv(rows, kTile) * CeilDiv(cols, kTile);
  FP8D_KERNELS_CHECK(cast_tiles <= int64_t{0x7fffffff});
  if (amax_tiles > 0) {
    ColumnBlockAmaxKernel<T><<<static_cast<unsigned>(amax_tiles), block, 0, stream>>>(
        in, rows, cols, block_rows, amax_bits);
    CUDA_CHECK_LAUNCH();
    if (format == Fp8Format::kE4M3) {
      TransposedCastKernel<T, true><<<static_cast<unsigned>(cast_tiles), block, 0, stream>>>(
          in, rows, cols, block_rows, amax_bits, fp8_max, out_t, stats);
    } else {
      TransposedCastKernel<T, false><<<static_cast<unsigned>(cast_tiles), block, 0, stream>>>(
          in, rows, cols, block_rows, amax_bits, fp8_max, out_t, stats);
    }
    CUDA_CHECK_LAUNCH();
  }
  FinalizeBlockScalesKernel<<<static_cast<unsigned>(CeilDiv(n_scales, kThreads)), kThreads, 0,
                              stream>>>(n_scales, fp8_max, scale_inv, scales);
  CUDA_CHECK_LAUNCH();
}

}  // namespace

void CastToFp8(const __nv_bfloat16* in, int64_t rows, int64_t cols, Fp8Format format,
               const float* scale, uint8_t* out, uint8_t* out_t, float* scale_inv,
               Fp8CastStats* stats, cudaStream_t stream) {
  CastToFp8Impl(in, rows, cols, format, scale, out, out_t, scale_inv, stats, stream);
}
void CastToFp8(const float* in, int64_t rows, int64_t cols, Fp8Format format, const float* scale,
               uint8_t* out, uint8_t* out_t, float* scale_inv, Fp8CastStats* stats,
               cudaStream_t stream) {
  CastToFp8Impl(in, rows, cols, format, scale, out, out_t, scale_inv, stats, stream);
}

void Fp8Amax(const __nv_bfloat16* in, int64_t n, float* amax, cudaStream_t stream) {
  AmaxImpl(in, n, amax, stream);
}
void Fp8Amax(const float* in, int64_t n, float* amax, cudaStream_t stream) {
  AmaxImpl(in, n, amax, stream);
}

void CurrentScaleCastToFp8(const __nv_bfloat16* in, int64_t rows, int64_t cols, Fp8Format format,
                           int margin, uint8_t* out, uint8_t* out_t, float* scale,
                           float* scale_inv, Fp8CastStats* stats, cudaStream_t stream) {
  CurrentScaleCastImpl(in, rows, cols, format, margin, out, out_t, scale, scale_inv, stats,
                       stream);
}
void CurrentScaleCastToFp8(const float* in, int64_t rows, int64_t cols, Fp8Format format,
                           int margin, uint8_t* out, uint8_t* out_t, float* scale,
                           float* scale_inv, Fp8CastStats* stats, cudaStream_t stream) {
  CurrentScaleCastImpl(in, rows, cols, format, margin, out, out_t, scale, scale_inv, stats,
                       stream);
}

void RowwiseCastToFp8(const __nv_bfloat16* in, int64_t rows, int64_t cols, Fp8Format format,
                      uint8_t* out, float* scale_inv, float* scales, Fp8CastStats* stats,
                      cudaStream_t stream) {
  RowwiseImpl(in, rows, cols, format, out, scale_inv, scales, stats, stream);
}
void RowwiseCastToFp8(const float* in, int64_t rows, int64_t cols, Fp8Format format, uint8_t* out,
                      float* scale_inv, float* scales, Fp8CastStats* stats, cudaStream_t stream) {
  RowwiseImpl(in, rows, cols, format, out, scale_inv, scales, stats, stream);
}

void BlockwiseCastToFp8(const __nv_bfloat16* in, int64_t rows, int64_t cols, Fp8Format format,
                        uint8_t* out, float* scale_inv, float* scales, Fp8CastStats* stats,
                        cudaStream_t stream) {
  BlockwiseImpl(in, rows, cols, format, out, scale_inv, scales, stats, stream);
}
void BlockwiseCastToFp8(const float* in, int64_t rows, int64_t cols, Fp8Format format,
                        uint8_t* out, float* scale_inv, float* scales, Fp8CastStats* stats,
                        cudaStream_t stream) {
  BlockwiseImpl(in, rows, cols, format, out, scale_inv, scales, stats, stream);
}

void TransposedRowwiseCastToFp8(const __nv_bfloat16* in, int64_t rows, int64_t cols,
                                Fp8Format format, uint8_t* out_t, float* scale_inv, float* scales,
                                Fp8CastStats* stats, cudaStream_t stream) {
  TransposedBlocksImpl(in, rows, cols, std::max<int64_t>(rows, 1), format, out_t, scale_inv,
                       scales, stats, stream);
}
void TransposedRowwiseCastToFp8(const float* in, int64_t rows, int64_t cols, Fp8Format format,
                                uint8_t* out_t, float* scale_inv, float* scales,
                                Fp8CastStats* stats, cudaStream_t stream) {
  TransposedBlocksImpl(in, rows, cols, std::max<int64_t>(rows, 1), format, out_t, scale_inv,
                       scales, stats, stream);
}
void TransposedBlockwiseCastToFp8(const __nv_bfloat16* in, int64_t rows, int64_t cols,
                                  Fp8Format format, uint8_t* out_t, float* scale_inv,
                                  float* scales, Fp8CastStats* stats, cudaStream_t stream) {
  TransposedBlocksImpl(in, rows, cols, kFp8BlockCols, format, out_t, scale_inv, scales, stats,
                       stream);
}
void TransposedBlockwiseCastToFp8(const float* in, int64_t rows, int64_t cols, Fp8Format format,
                                  uint8_t* out_t, float* scale_inv, float* scales,
                                  Fp8CastStats* stats, cudaStream_t stream) {
  TransposedBlocksImpl(in, rows, cols, kFp8BlockCols, format, out_t, scale_inv, scales, stats,
                       stream);
}

}  // namespace fp8d::kernels
