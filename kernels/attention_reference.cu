#include "kernels/attention_reference.cuh"

#include <cmath>
#include <cstdint>

#include "kernels/cuda_check.h"
#include "kernels/device_common.cuh"

namespace fp8d::kernels {
namespace {

constexpr int kWarpsPerBlock = 4;
// Each lane holds head dims lane, lane + 32, ... in registers.
constexpr int kDimsPerLane = kMaxReferenceHeadDim / kWarpSize;

struct Geometry {
  int T, H, KV, hd, group, stride;
  int64_t out_stride;
  float scale;
};

Geometry MakeGeometry(const AttentionDims& d) {
  return Geometry{d.seq_len,
                  d.n_head,
                  d.n_kv_head,
                  d.head_dim,
                  d.n_head / d.n_kv_head,
                  d.qkv_stride,
                  static_cast<int64_t>(d.n_head) * d.head_dim,
                  1.f / sqrtf(static_cast<float>(d.head_dim))};
}

__device__ __forceinline__ int64_t Row(const Geometry& g, int b, int t) {
  return (static_cast<int64_t>(b) * g.T + t);
}

__device__ __forceinline__ void StoreHead(__nv_bfloat16* p, const float (&r)[kDimsPerLane],
                                          int hd) {
  const int lane = threadIdx.x % kWarpSize;
#pragma unroll
  for (int i = 0; i < kDimsPerLane; ++i) {
    const int d = lane + i * kWarpSize;
    if (d < hd) p[d] = __float2bfloat16_rn(r[i]);
  }
}

// Copies one head vector (head_dim values) into this warp's shared-memory row as FP32.
__device__ __forceinline__ void StageHead(float* dst, const __nv_bfloat16* src, int hd) {
  for (int d = threadIdx.x % kWarpSize; d < hd; d += kWarpSize) dst[d] = __bfloat162float(src[d]);
  __syncwarp();
}

// Full dot product of a staged (shared, FP32) head vector with one BF16 row, by one lane.
__device__ __forceinline__ float LaneDot(const float* staged, const __nv_bfloat16* row, int hd) {
  float acc = 0.f;
  for (int d = 0; d < hd; ++d) acc += staged[d] * __bfloat162float(row[d]);
  return acc;
}

// One warp per (b, h, t). Keys go in tiles of 32, one key per lane, so each lane computes a
// whole score and the warp reduces once per tile (online softmax across tiles); the weighted
// values are then accumulated with each lane owning head dims lane, lane + 32, ...
__global__ void ForwardKernel(__nv_bfloat16* out, float* lse, const __nv_bfloat16* q,
                              const __nv_bfloat16* k, const __nv_bfloat16* v, int batch,
                              Geometry g) {
  __shared__ float staged_q[kWarpsPerBlock][kMaxReferenceHeadDim];
  const int64_t warp = static_cast<int64_t>(blockIdx.x) * kWarpsPerBlock + threadIdx.x / kWarpSize;
  if (warp >= static_cast<int64_t>(batch) * g.H * g.T) return;
  const int t = static_cast<int>(warp % g.T);
  const int h = static_cast<int>((warp / g.T) % g.H);
  const int b = static_cast<int>(warp / (static_cast<int64_t>(g.T) * g.H));
  const int kvh = h / g.group;
  const int lane = threadIdx.x % kWarpSize;
  float* qs = staged_q[threadIdx.x / kWarpSize];
  StageHead(qs, q + Row(g, b, t) * g.stride + h * g.hd, g.hd);
  float acc[kDimsPerLane];
#pragma unroll
  for (int i = 0; i < kDimsPerLane; ++i) acc[i] = 0.f;
  float mx = -INFINITY, sum = 0.f;
  for (int j0 = 0; j0 <= t; j0 += kWarpSize) {
    const int j = j0 + lane;
    float s = -INFINITY;
    if (j <= t) s = LaneDot(qs, k + Row(g, b, j) * g.stride + kvh * g.hd, g.hd) * g.scale;
    const float new_mx = fmaxf(mx, WarpMax(s));
    const float p = j <= t ? expf(s - new_mx) : 0.f;
    const float correction = expf(mx - new_mx);  // 0 on the first tile (mx = -inf)
    sum = sum * correction + WarpSum(p);
#pragma unroll
    for (int i = 0; i < kDimsPerLane; ++i) acc[i] *= correction;
    const int tile = min(kWarpSize, t + 1 - j0);
    for (int jj = 0; jj < tile; ++jj) {
      const float pj = __shfl_sync(0xffffffffu, p, jj);
      const __nv_bfloat16* vj = v + Row(g, b, j0 + jj) * g.stride + kvh * g.hd;
#pragma unroll
      for (int i = 0; i < kDimsPerLane; ++i) {
        const int d = lane + i * kWarpSize;
        if (d < g.hd) acc[i] += pj * __bfloat162float(vj[d]);
      }
    }
    mx = new_mx;
  }
#pragma unroll
  for (int i = 0; i < kDimsPerLane; ++i) acc[i] /= sum;
  StoreHead(out + Row(g, b, t) * g.out_stride + h * g.hd, acc, g.hd);
  if (lane == 0) lse[(static_cast<int64_t>(b) * g.H + h) * g.T + t] = mx + logf(sum);
}

// One warp per (b, h, t): D = dout . out, then dq = sum_j ds_j k_j with
// ds_j = p_j (dout . v_j - D) * scale; keys in tiles of 32, one per lane.
__global__ void BackwardDqKernel(__nv_bfloat16* dq, float* delta, const __nv_bfloat16* dout,
                                 const __nv_bfloat16* q, const __nv_bfloat16* k,
                                 const __nv_bfloat16* v, const __nv_bfloat16* out,
                                 const float* lse, int batch, Geometry g) {
  __shared__ float staged_q[kWarpsPerBlock][kMaxReferenceHeadDim];
  __shared__ float staged_do[kWarpsPerBlock][kMaxReferenceHeadDim];
  const int64_t warp = static_cast<int64_t>(blockIdx.x) * kWarpsPerBlock + threadIdx.x / kWarpSize;
  if (warp >= static_cast<int64_t>(batch) * g.H * g.T) return;
  const int t = static_cast<int>(warp % g.T);
  const int h = static_cast<int>((warp / g.T) % g.H);
  const int b = static_cast<int>(warp / (static_cast<int64_t>(g.T) * g.H));
  const int kvh = h / g.group;
  const int lane = threadIdx.x % kWarpSize;
  const int64_t o_off = Row(g, b, t) * g.out_stride + h * g.hd;
  float* qs = staged_q[threadIdx.x / kWarpSize];
  float* dos = staged_do[threadIdx.x / kWarpSize];
  StageHead(qs, q + Row(g, b, t) * g.stride + h * g.hd, g.hd);
  StageHead(dos, dout + o_off, g.hd);
  float D = 0.f;
  for (int d = lane; d < g.hd; d += kWarpSize) D += dos[d] * __bfloat162float(out[o_off + d]);
  D = WarpSum(D);
  const int64_t stat = (static_cast<int64_t>(b) * g.H + h) * g.T + t;
  const float l = lse[stat];
  if (lane == 0) delta[stat] = D;
  float acc[kDimsPerLane];
#pragma unroll
  for (int i = 0; i < kDimsPerLane; ++i) acc[i] = 0.f;
  for (int j0 = 0; j0 <= t; j0 += kWarpSize) {
    const int j = j0 + lane;
    float ds = 0.f;
    if (j <= t) {
      const int64_t kv_off = Row(g, b, j) * g.stride + kvh * g.hd;
      const float p = expf(LaneDot(qs, k + kv_off, g.hd) * g.scale - l);
      ds = p * (LaneDot(dos, v + kv_off, g.hd) - D) * g.scale;
    }
    const int tile = min(kWarpSize, t + 1 - j0);
    for (int jj = 0; jj < tile; ++jj) {
      const float dsj = __shfl_sync(0xffffffffu, ds, jj);
      const __nv_bfloat16* kj = k + Row(g, b, j0 + jj) * g.stride + kvh * g.hd;
#pragma unroll
      for (int i = 0; i < kDimsPerLane; ++i) {
        const int d = lane + i * kWarpSize;
        if (d < g.hd) acc[i] += dsj * __bfloat162float(kj[d]);
      }
    }
  }
  StoreHead(dq + Row(g, b, t) * g.stride + h * g.hd, acc, g.hd);
}

// One warp per (b, kv head, key j): sums over the group's query heads (in order) and over
// queries t >= j (in order), queries in tiles of 32, one per lane.
__global__ void BackwardDkDvKernel(__nv_bfloat16* dk, __nv_bfloat16* dv, const float* delta,
                                   const __nv_bfloat16* dout, const __nv_bfloat16* q,
                                   const __nv_bfloat16* k, const __nv_bfloat16* v,
                                   const float* lse, int batch, Geometry g) {
  __shared__ float staged_k[kWarpsPerBlock][kMaxReferenceHeadDim];
  __shared__ float staged_v[kWarpsPerBlock][kMaxReferenceHeadDim];
  const int64_t warp = static_cast<int64_t>(blockIdx.x) * kWarpsPerBlock + threadIdx.x / kWarpSize;
  if (warp >= static_cast<int64_t>(batch) * g.KV * g.T) return;
  const int j = static_cast<int>(warp % g.T);
  const int kvh = static_cast<int>((warp / g.T) % g.KV);
  const int b = static_cast<int>(warp / (static_cast<int64_t>(g.T) * g.KV));
  const int lane = threadIdx.x % kWarpSize;
  const int64_t kv_off = Row(g, b, j) * g.stride + kvh * g.hd;
  float* ks = staged_k[threadIdx.x / kWarpSize];
  float* vs = staged_v[threadIdx.x / kWarpSize];
  StageHead(ks, k + kv_off, g.hd);
  StageHead(vs, v + kv_off, g.hd);
  float dk_acc[kDimsPerLane], dv_acc[kDimsPerLane];
#pragma unroll
  for (int i = 0; i < kDimsPerLane; ++i) dk_acc[i] = dv_acc[i] = 0.f;
  for (int h = kvh * g.group; h < (kvh + 1) * g.group; ++h) {
    for (int t0 = j; t0 < g.T; t0 += kWarpSize) {
      const int t = t0 + lane;
      float p = 0.f, ds = 0.f;
      if (t < g.T) {
        const int64_t stat = (static_cast<int64_t>(b) * g.H + h) * g.T + t;
        p = expf(LaneDot(ks, q + Row(g, b, t) * g.stride + h * g.hd, g.hd) * g.scale - lse[stat]);
        const float dp = LaneDot(vs, dout + Row(g, b, t) * g.out_stride + h * g.hd, g.hd);
        ds = p * (dp - delta[stat]) * g.scale;
      }
      const int tile = min(kWarpSize, g.T - t0);
      for (int tt = 0; tt < tile; ++tt) {
        const float pt = __shfl_sync(0xffffffffu, p, tt);
        const float dst = __shfl_sync(0xffffffffu, ds, tt);
        const __nv_bfloat16* qt = q + Row(g, b, t0 + tt) * g.stride + h * g.hd;
        const __nv_bfloat16* dot = dout + Row(g, b, t0 + tt) * g.out_stride + h * g.hd;
#pragma unroll
        for (int i = 0; i < kDimsPerLane; ++i) {
          const int d = lane + i * kWarpSize;
          if (d < g.hd) {
            dk_acc[i] += dst * __bfloat162float(qt[d]);
            dv_acc[i] += pt * __bfloat162float(dot[d]);
          }
        }
      }
    }
  }
  StoreHead(dk + kv_off, dk_acc, g.hd);
  StoreHead(dv + kv_off, dv_acc, g.hd);
}

void CheckDims(const AttentionDims& d) {
  FP8D_KERNELS_CHECK(d.head_dim > 0 && d.head_dim <= kMaxReferenceHeadDim);
  FP8D_KERNELS_CHECK(d.n_kv_head > 0 && d.n_head % d.n_kv_head == 0);
  FP8D_KERNELS_CHECK(d.qkv_stride >= d.n_head * d.head_dim);
}

unsigned BlocksFor(int64_t warps) { return static_cast<unsigned>(CeilDiv(warps, kWarpsPerBlock)); }

}  // namespace

void ReferenceAttentionForward(cudaStream_t stream, __nv_bfloat16* out, float* lse,
                               const __nv_bfloat16* q, const __nv_bfloat16* k,
                               const __nv_bfloat16* v, const AttentionDims& dims) {
  CheckDims(dims);
  const int64_t warps = static_cast<int64_t>(dims.batch) * dims.n_head * dims.seq_len;
  if (warps == 0) return;
  ForwardKernel<<<BlocksFor(warps), kWarpsPerBlock * kWarpSize, 0, stream>>>(
      out, lse, q, k, v, dims.batch, MakeGeometry(dims));
  CUDA_CHECK_LAUNCH();
}

size_t ReferenceAttentionBackwardWorkspaceBytes(const AttentionDims& dims) {
  return sizeof(float) * static_cast<size_t>(dims.batch) * dims.n_head * dims.seq_len;
}

void ReferenceAttentionBackward(cudaStream_t stream, __nv_bfloat16* dq, __nv_bfloat16* dk,
                                __nv_bfloat16* dv, const __nv_bfloat16* dout,
                                const __nv_bfloat16* q, const __nv_bfloat16* k,
                                const __nv_bfloat16* v, const __nv_bfloat16* out, const float* lse,
                                const AttentionDims& dims, void* workspace,
                                size_t workspace_bytes) {
  CheckDims(dims);
  FP8D_KERNELS_CHECK(workspace_bytes >= ReferenceAttentionBackwardWorkspaceBytes(dims));
  const int64_t q_warps = static_cast<int64_t>(dims.batch) * dims.n_head * dims.seq_len;
  if (q_warps == 0) return;
  const Geometry g = MakeGeometry(dims);
  float* delta = static_cast<float*>(workspace);
  BackwardDqKernel<<<BlocksFor(q_warps), kWarpsPerBlock * kWarpSize, 0, stream>>>(
      dq, delta, dout, q, k, v, out, lse, dims.batch, g);
  CUDA_CHECK_LAUNCH();
  const int64_t kv_warps = static_cast<int64_t>(dims.batch) * dims.n_kv_head * dims.seq_len;
  BackwardDkDvKernel<<<BlocksFor(kv_warps), kWarpsPerBlock * kWarpSize, 0, stream>>>(
      dk, dv, delta, dout, q, k, v, lse, dims.batch, g);
  CUDA_CHECK_LAUNCH();
}

}  // namespace fp8d::kernels
