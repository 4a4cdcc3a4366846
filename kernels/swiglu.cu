#include "kernels/swiglu.cuh"

#include <algorithm>
#include <cstdint>

#include "kernels/cuda_check.h"
#include "kernels/device_common.cuh"
#include "kernels/elementwise_math.cuh"

namespace fp8d::kernels {
namespace {

constexpr int kThreads = 256;
// BF16 elements per 16-byte vector.
constexpr int kVec = 8;
// Vectors each thread loads before it computes any: four of gate and up (forward) or of gate, up
// and dh (backward) keep 128-192 bytes per thread in flight, enough to cover HBM latency at the
// occupancy the registers allow.
constexpr int kVecsPerThread = 4;

// The element formulas (kernels/elementwise_math.cuh) are shared by the scalar and the vector
// kernels, so both compile to the same FP32 operations and round identically: which path runs
// never changes a bit of the result.

// A 16-byte vector viewed as its 8 BF16 elements.
union Bf16x8 {
  uint4 raw;
  __nv_bfloat16 v[kVec];
};

// Where a thread's vectors lie in the [rows, vecs_per_row] grid of 16-byte vectors of h. A
// grid-stride step moves the flat index by a constant, so it is split once into whole rows and
// a column remainder; each step is then an add and a compare instead of a 64-bit division.
struct VecCursor {
  int64_t row;
  int col;

  __device__ __forceinline__ void Advance(int64_t step_rows, int step_cols, int vecs_per_row) {
    row += step_rows;
    col += step_cols;
    if (col >= vecs_per_row) {
      col -= vecs_per_row;
      ++row;
    }
  }
};

struct VecStride {
  VecCursor start;
  int64_t step_rows;
  int step_cols;
};

// The thread's first vector and the grid's stride, in rows and columns (once per thread).
__device__ __forceinline__ VecStride ThreadVecStride(int vecs_per_row) {
  const int64_t first = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
  return VecStride{VecCursor{first / vecs_per_row, static_cast<int>(first % vecs_per_row)},
                   stride / vecs_per_row, static_cast<int>(stride % vecs_per_row)};
}

// Fallback for any d_ff and alignment. Block (x, y) covers row x, columns
// [y * blockDim.x, (y + 1) * blockDim.x): no integer division per element.
__global__ void SwiGluForwardKernel(__nv_bfloat16* h, const __nv_bfloat16* gate_up, int d_ff) {
  const int j = blockIdx.y * blockDim.x + threadIdx.x;
  if (j >= d_ff) return;
  const int64_t row = blockIdx.x;
  h[row * d_ff + j] = SwiGluValue(gate_up[row * 2 * d_ff + j], gate_up[row * 2 * d_ff + d_ff + j]);
}

__global__ void SwiGluBackwardKernel(__nv_bfloat16* dgate_up, const __nv_bfloat16* dh,
                                     const __nv_bfloat16* gate_up, int d_ff) {
  const int j = blockIdx.y * blockDim.x + threadIdx.x;
  if (j >= d_ff) return;
  const int64_t row = blockIdx.x;
  const int64_t gi = row * 2 * d_ff + j;
  const int64_t ui = gi + d_ff;
  // Both reads happen before either write (the contract when dgate_up aliases gate_up).
  const __nv_bfloat16 g = gate_up[gi], u = gate_up[ui];
  __nv_bfloat16 dg, du;
  SwiGluGrad(g, u, dh[row * d_ff + j], &dg, &du);
  dgate_up[gi] = dg;
  dgate_up[ui] = du;
}

// d_ff % 8 == 0 and 16-byte aligned pointers: every row of gate and of up starts on a vector.
// Vector (row, col) of h pairs with gate vector row * 2 * vecs_per_row + col and the up vector
// vecs_per_row after it. Each pass a thread loads kVecsPerThread vectors (grid-stride apart, so a
// warp's loads stay contiguous), then computes and stores them.
__global__ void __launch_bounds__(kThreads)
    SwiGluForwardVecKernel(uint4* __restrict__ h, const uint4* __restrict__ gate_up, int64_t rows,
                           int vecs_per_row) {
  const VecStride s = ThreadVecStride(vecs_per_row);
  VecCursor cur = s.start;
  while (cur.row < rows) {
    Bf16x8 g[kVecsPerThread], u[kVecsPerThread];
    int64_t out[kVecsPerThread];
#pragma unroll
    for (int k = 0; k < kVecsPerThread; ++k) {
      out[k] = -1;
      if (cur.row < rows) {
        const int64_t gi = cur.row * 2 * vecs_per_row + cur.col;
        g[k].raw = gate_up[gi];
        u[k].raw = gate_up[gi + vecs_per_row];
        out[k] = cur.row * vecs_per_row + cur.col;
      }
      cur.Advance(s.step_rows, s.step_cols, vecs_per_row);
    }
#pragma unroll
    for (int k = 0; k < kVecsPerThread; ++k) {
      if (out[k] < 0) continue;
      Bf16x8 r;
#pragma unroll
      for (int e = 0; e < kVec; ++e) r.v[e] = SwiGluValue(g[k].v[e], u[k].v[e]);
      h[out[k]] = r.raw;
    }
  }
}

// No __restrict__ on gate_up / dgate_up: they may be the same buffer. A thread loads its gate and
// up vectors before it stores the gradients over them, and no other thread touches them.
__global__ void __launch_bounds__(kThreads)
    SwiGluBackwardVecKernel(uint4* dgate_up, const uint4* __restrict__ dh, const uint4* gate_up,
                            int64_t rows, int vecs_per_row) {
  const VecStride s = ThreadVecStride(vecs_per_row);
  VecCursor cur = s.start;
  while (cur.row < rows) {
    Bf16x8 g[kVecsPerThread], u[kVecsPerThread], d[kVecsPerThread];
    int64_t gidx[kVecsPerThread];
#pragma unroll
    for (int k = 0; k < kVecsPerThread; ++k) {
      gidx[k] = -1;
      if (cur.row < rows) {
        const int64_t gi = cur.row * 2 * vecs_per_row + cur.col;
        g[k].raw = gate_up[gi];
        u[k].raw = gate_up[gi + vecs_per_row];
        d[k].raw = dh[cur.row * vecs_per_row + cur.col];
        gidx[k] = gi;
      }
      cur.Advance(s.step_rows, s.step_cols, vecs_per_row);
    }
#pragma unroll
    for (int k = 0; k < kVecsPerThread; ++k) {
      if (gidx[k] < 0) continue;
      Bf16x8 dg, du;
#pragma unroll
      for (int e = 0; e < kVec; ++e) {
        SwiGluGrad(g[k].v[e], u[k].v[e], d[k].v[e], &dg.v[e], &du.v[e]);
      }
      dgate_up[gidx[k]] = dg.raw;
      dgate_up[gidx[k] + vecs_per_row] = du.raw;
    }
  }
}

dim3 ScalarGrid(int64_t rows, int d_ff) {
  return dim3(static_cast<unsigned>(rows), static_cast<unsigned>(CeilDiv(d_ff, kThreads)));
}

bool Aligned16(const void* p) { return reinterpret_cast<uintptr_t>(p) % 16 == 0; }

int BlocksPerSm(const void* kernel) {
  int blocks = 0;
  CUDA_CHECK(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&blocks, kernel, kThreads, 0));
  return std::max(blocks, 1);
}

// Enough blocks to fill every SM at the kernel's occupancy, fewer when the tensor is smaller
// than one pass (then each thread gets its kVecsPerThread vectors in a single pass).
int VecGrid(int blocks_per_sm, int64_t n_vecs) {
  int device = 0, sms = 0;
  CUDA_CHECK(cudaGetDevice(&device));
  CUDA_CHECK(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, device));
  const int64_t resident = static_cast<int64_t>(sms) * blocks_per_sm;
  const int64_t needed = CeilDiv(n_vecs, static_cast<int64_t>(kThreads) * kVecsPerThread);
  return static_cast<int>(std::clamp<int64_t>(needed, 1, resident));
}

}  // namespace

void SwiGluForward(cudaStream_t stream, __nv_bfloat16* h, const __nv_bfloat16* gate_up,
                   int64_t rows, int d_ff) {
  if (rows == 0 || d_ff == 0) return;
  if (d_ff % kVec == 0 && Aligned16(h) && Aligned16(gate_up)) {
    const int vecs_per_row = d_ff / kVec;
    // Occupancy depends on the kernel and the architecture only: asked once.
    static const int blocks_per_sm =
        BlocksPerSm(reinterpret_cast<const void*>(SwiGluForwardVecKernel));
    const int blocks = VecGrid(blocks_per_sm, rows * vecs_per_row);
    SwiGluForwardVecKernel<<<blocks, kThreads, 0, stream>>>(
        reinterpret_cast<uint4*>(h), reinterpret_cast<const uint4*>(gate_up), rows, vecs_per_row);
  } else {
    SwiGluForwardKernel<<<ScalarGrid(rows, d_ff), kThreads, 0, stream>>>(h, gate_up, d_ff);
  }
  CUDA_CHECK_LAUNCH();
}

void SwiGluBackward(cudaStream_t stream, __nv_bfloat16* dgate_up, const __nv_bfloat16* dh,
                    const __nv_bfloat16* gate_up, int64_t rows, int d_ff) {
  if (rows == 0 || d_ff == 0) return;
  if (d_ff % kVec == 0 && Aligned16(dgate_up) && Aligned16(dh) && Aligned16(gate_up)) {
    const int vecs_per_row = d_ff / kVec;
    static const int blocks_per_sm =
        BlocksPerSm(reinterpret_cast<const void*>(SwiGluBackwardVecKernel));
    const int blocks = VecGrid(blocks_per_sm, rows * vecs_per_row);
    SwiGluBackwardVecKernel<<<blocks, kThreads, 0, stream>>>(
        reinterpret_cast<uint4*>(dgate_up), reinterpret_cast<const uint4*>(dh),
        reinterpret_cast<const uint4*>(gate_up), rows, vecs_per_row);
  } else {
    SwiGluBackwardKernel<<<ScalarGrid(rows, d_ff), kThreads, 0, stream>>>(dgate_up, dh, gate_up,
                                                                          d_ff);
  }
  CUDA_CHECK_LAUNCH();
}

}  // namespace fp8d::kernels
