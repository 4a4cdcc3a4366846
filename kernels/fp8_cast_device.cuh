// Device-side pieces of the FP8 casts shared by kernels/fp8_cast.cu (casts of tensors in memory)
// and kernels/fp8_fused.cu (casts fused into the kernels that produce the tensor): the E4M3/E5M2
// conversion, the per-thread statistics and their per-block flush, and the 64x64-tiled
// cast-transpose kernel, which takes its input from a loader so that a producer (RMSNorm,
// SwiGLU) can compute the values in registers instead of reading them back from memory.
// Included only from .cu files.
#pragma once

#include <cuda_fp8.h>

#include <cfloat>
#include <cstdint>

#include "kernels/delayed_scaling.cuh"
#include "kernels/device_common.cuh"
#include "kernels/fp8_cast.cuh"

namespace fp8d::kernels::fp8_device {

constexpr unsigned kFullMask = 0xffffffffu;
constexpr int kMaxWarpsPerBlock = 32;

// Grid of the persistent (grid-stride) kernels: enough resident blocks to fill an H100, few
// enough that the per-block statistics atomics stay cheap.
constexpr int kPersistentBlocks = 132 * 8;

template <bool kE4M3>
__device__ __forceinline__ uint8_t ToFp8(float x) {
  return __nv_cvt_float_to_fp8(x, __NV_SATFINITE, kE4M3 ? __NV_E4M3 : __NV_E5M2);
}

// |x| as bits: for non-negative floats the unsigned order is the numeric order, and every NaN
// sorts above inf, so an integer max propagates NaN exactly like core's AmaxFold.
__device__ __forceinline__ uint32_t AbsBits(float x) { return __float_as_uint(x) & 0x7fffffffu; }

// core's BlockScale (current scaling of a row or block): 1 for amax 0, NaN or inf; FLT_MAX when
// fp8_max / amax overflows, so 1 / scale stays nonzero.
__device__ __forceinline__ float BlockScale(float amax, float fp8_max) {
  if (!isfinite(amax) || !(amax > 0.f)) return 1.f;
  const float scale = fp8_max / amax;
  return isinf(scale) ? FLT_MAX : scale;
}

// One thread's share of the statistics, flushed once per block.
struct LocalStats {
  uint32_t amax_bits = 0;
  uint32_t saturated = 0;
  uint32_t underflow = 0;
  uint32_t nonzero = 0;

  __device__ __forceinline__ void Add(float x, float scaled, uint8_t code, float fp8_max) {
    amax_bits = max(amax_bits, AbsBits(x));
    const bool is_nonzero = x != 0.f;
    nonzero += is_nonzero;
    saturated += fabsf(scaled) > fp8_max;
    underflow += is_nonzero && (code & 0x7Fu) == 0;
  }

  // Every thread of the block must call it: the block's statistics are combined in shared memory
  // and thread 0 issues one atomic per field. Per-warp atomics on the one stats address
  // serialise in L2 and cost more than the cast itself on large tensors.
  __device__ __forceinline__ void FlushBlock(Fp8CastStats* stats) const {
    __shared__ uint32_t partial[4][kMaxWarpsPerBlock];
    const unsigned tid = threadIdx.y * blockDim.x + threadIdx.x;
    const unsigned warps = (blockDim.x * blockDim.y + kWarpSize - 1) / kWarpSize;
    const uint32_t amax = __reduce_max_sync(kFullMask, amax_bits);
    const uint32_t sat = __reduce_add_sync(kFullMask, saturated);
    const uint32_t under = __reduce_add_sync(kFullMask, underflow);
    const uint32_t nz = __reduce_add_sync(kFullMask, nonzero);
    if (tid % kWarpSize == 0) {
      partial[0][tid / kWarpSize] = amax;
      partial[1][tid / kWarpSize] = sat;
      partial[2][tid / kWarpSize] = under;
      partial[3][tid / kWarpSize] = nz;
    }
    __syncthreads();
    if (tid != 0) return;
    uint32_t b_amax = 0;
    unsigned long long b_sat = 0, b_under = 0, b_nz = 0;
    for (unsigned w = 0; w < warps; ++w) {
      b_amax = max(b_amax, partial[0][w]);
      b_sat += partial[1][w];
      b_under += partial[2][w];
      b_nz += partial[3][w];
    }
    atomicMax(reinterpret_cast<unsigned int*>(&stats->amax), b_amax);
    if (b_sat) atomicAdd(reinterpret_cast<unsigned long long*>(&stats->saturated), b_sat);
    if (b_under) atomicAdd(reinterpret_cast<unsigned long long*>(&stats->underflow), b_under);
    if (b_nz) atomicAdd(reinterpret_cast<unsigned long long*>(&stats->nonzero), b_nz);
  }
};

// The per-tensor scale of a cast kernel: read from `scale_ptr` or, with `amax_for_scale`, derived
// from that amax (current scaling); block 0's first thread publishes it (scale_out) and its
// inverse (scale_inv, what the GEMM's scale pointer wants).
__device__ __forceinline__ float TensorScale(const float* scale_ptr, const float* amax_for_scale,
                                             int margin, float fp8_max, float* scale_out,
                                             float* scale_inv) {
  const float scale = amax_for_scale != nullptr
                          ? DeviceComputeScale(*amax_for_scale, fp8_max, margin, 1.f)
                          : *scale_ptr;
  if (blockIdx.x == 0 && threadIdx.x == 0 && threadIdx.y == 0) {
    if (scale_out != nullptr) *scale_out = scale;
    if (scale_inv != nullptr) *scale_inv = 1.0f / scale;
  }
  return scale;
}

// Tensors whose sides are multiples of 64 (every FP8 GEMM operand of a model with 64-aligned
// widths and token counts) are cast in 64x64 tiles.
constexpr int kFastTile = 64;
constexpr int kFastThreads = 256;

// Reads a tensor [rows, cols] of T from memory, kVec elements (16 bytes) at a time.
template <typename T>
struct MemoryLoader {
  static constexpr int kVec = 16 / sizeof(T);
  const T* in;
  int64_t cols;

  __device__ __forceinline__ void operator()(int64_t row, int64_t col, float (&v)[kVec]) const {
    alignas(16) T vals[kVec];
    *reinterpret_cast<uint4*>(vals) = *reinterpret_cast<const uint4*>(in + row * cols + col);
#pragma unroll
    for (int j = 0; j < kVec; ++j) v[j] = ToFloat(vals[j]);
  }
};

// Cast + transpose of a [rows, cols] tensor (both multiples of kFastTile) whose values the loader
// produces, kVec consecutive columns per call: each element is produced once, its code written
// to `out` and, through a shared-memory tile, to `out_t` ([cols, rows]; skipped when null) with
// 8-byte stores. Persistent blocks loop over the tiles and flush their statistics once. The
// scale is read from `scale_ptr` or, with `amax_for_scale`, derived from that amax (current
// scaling); block 0 publishes it (scale_out) and its inverse (scale_inv).
template <typename Loader, bool kE4M3>
__global__ void __launch_bounds__(kFastThreads)
    CastTransposeTiledKernel(Loader load, int64_t rows, int64_t cols, const float* scale_ptr,
                             const float* amax_for_scale, int margin, float fp8_max,
                             uint8_t* __restrict__ out, uint8_t* __restrict__ out_t,
                             float* scale_out, float* scale_inv, Fp8CastStats* stats) {
  constexpr int kVec = Loader::kVec;                   // elements per load (8 or 4)
  constexpr int kThreadsPerRow = kFastTile / kVec;     // 8 or 16
  constexpr int kRowsPerPass = kFastThreads / kThreadsPerRow;
  constexpr int kPad = 8;  // staggers the column reads; keeps rows 8-byte aligned for uint2
  __shared__ __align__(16) uint8_t tile[kFastTile][kFastTile + kPad];
  const float scale =
      TensorScale(scale_ptr, amax_for_scale, margin, fp8_max, scale_out, scale_inv);
  const int64_t tiles_across = cols / kFastTile;
  const int64_t n_tiles = (rows / kFastTile) * tiles_across;
  const int t = threadIdx.x;
  LocalStats local;
  for (int64_t tile_id = blockIdx.x; tile_id < n_tiles; tile_id += gridDim.x) {
    const int64_t r0 = (tile_id / tiles_across) * kFastTile;
    const int64_t c0 = (tile_id % tiles_across) * kFastTile;
    const int lc = (t % kThreadsPerRow) * kVec;  // column inside the tile
#pragma unroll
    for (int pass = 0; pass < kFastTile / kRowsPerPass; ++pass) {
      const int lr = t / kThreadsPerRow + pass * kRowsPerPass;
      const int64_t off = (r0 + lr) * cols + c0 + lc;
      float vals[kVec];
      load(r0 + lr, c0 + lc, vals);
      alignas(8) uint8_t codes[kVec];
#pragma unroll
      for (int j = 0; j < kVec; ++j) {
        const float scaled = vals[j] * scale;
        codes[j] = ToFp8<kE4M3>(scaled);
        local.Add(vals[j], scaled, codes[j], fp8_max);
      }
      if constexpr (kVec == 8) {
        *reinterpret_cast<uint2*>(out + off) = *reinterpret_cast<const uint2*>(codes);
        *reinterpret_cast<uint2*>(&tile[lr][lc]) = *reinterpret_cast<const uint2*>(codes);
      } else {
        *reinterpret_cast<uint32_t*>(out + off) = *reinterpret_cast<const uint32_t*>(codes);
        *reinterpret_cast<uint32_t*>(&tile[lr][lc]) = *reinterpret_cast<const uint32_t*>(codes);
      }
    }
    if (out_t == nullptr) continue;  // uniform across the block
    __syncthreads();
    // out_t rows are the tile's columns: each thread gathers 8 consecutive rows of one column.
#pragma unroll
    for (int pass = 0; pass < kFastTile * kFastTile / 8 / kFastThreads; ++pass) {
      const int idx = t + pass * kFastThreads;
      const int tc = idx / (kFastTile / 8);        // column of the tile = row of out_t
      const int tr = (idx % (kFastTile / 8)) * 8;  // first of 8 rows of the tile
      alignas(8) uint8_t codes[8];
#pragma unroll
      for (int j = 0; j < 8; ++j) codes[j] = tile[tr + j][tc];
      *reinterpret_cast<uint2*>(out_t + (c0 + tc) * rows + r0 + tr) =
          *reinterpret_cast<const uint2*>(codes);
    }
    __syncthreads();  // the tile is rewritten by the next iteration
  }
  if (stats != nullptr) local.FlushBlock(stats);
}

// Grid for CastTransposeTiledKernel over [rows, cols].
inline unsigned TiledGrid(int64_t rows, int64_t cols) {
  const int64_t tiles = (rows / kFastTile) * (cols / kFastTile);
  if (tiles < 1) return 1;
  return static_cast<unsigned>(tiles < kPersistentBlocks ? tiles : kPersistentBlocks);
}

}  // namespace fp8d::kernels::fp8_device
