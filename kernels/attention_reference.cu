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

// Loads a head vector into per-lane registers (zeros past head_dim).
__device__ __forceinline__ void LoadHead(float (&r)[kDimsPerLane], const __nv_bfloat16* p, int hd) {
  const int lane = threadIdx.x % kWarpSize;
#pragma unroll
  for (int i = 0; i < kDimsPerLane; ++i) {
    const int d = lane + i * kWarpSize;
    r[i] = d < hd ? __bfloat162float(p[d]) : 0.f;
  }
}

__device__ __forceinline__ float DotWithHead(const float (&r)[kDimsPerLane],
                                             const __nv_bfloat16* p, int hd) {
  const int lane = threadIdx.x % kWarpSize;
  float acc = 0.f;
#pragma unroll
  for (int i = 0; i < kDimsPerLane; ++i) {
    const int d = lane + i * kWarpSize;
    if (d < hd) acc += r[i] * __bfloat162float(p[d]);
  }
  return WarpSum(acc);
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

// One warp per (b, h, t), online softmax over keys 0..t.
__global__ void ForwardKernel(__nv_bfloat16* out, float* lse, const __nv_bfloat16* q,
                              const __nv_bfloat16* k, const __nv_bfloat16* v, int batch,
                              Geometry g) {
  const int64_t warp = static_cast<int64_t>(blockIdx.x) * kWarpsPerBlock + threadIdx.x / kWarpSize;
  if (warp >= static_cast<int64_t>(batch) * g.H * g.T) return;
  const int t = static_cast<int>(warp % g.T);
  const int h = static_cast<int>((warp / g.T) % g.H);
  const int b = static_cast<int>(warp / (static_cast<int64_t>(g.T) * g.H));
  const int kvh = h / g.group;
  float qr[kDimsPerLane], acc[kDimsPerLane];
  LoadHead(qr, q + Row(g, b, t) * g.stride + h * g.hd, g.hd);
#pragma unroll
  for (int i = 0; i < kDimsPerLane; ++i) acc[i] = 0.f;
  float mx = -INFINITY, sum = 0.f;
  const int lane = threadIdx.x % kWarpSize;
  for (int j = 0; j <= t; ++j) {
    const int64_t kv_off = Row(g, b, j) * g.stride + kvh * g.hd;
    const float s = DotWithHead(qr, k + kv_off, g.hd) * g.scale;
    const float new_mx = fmaxf(mx, s);
    const float correction = expf(mx - new_mx);  // 0 on the first key (mx = -inf)
    const float p = expf(s - new_mx);
    sum = sum * correction + p;
#pragma unroll
    for (int i = 0; i < kDimsPerLane; ++i) {
      const int d = lane + i * kWarpSize;
      const float vd = d < g.hd ? __bfloat162float(v[kv_off + d]) : 0.f;
      acc[i] = acc[i] * correction + p * vd;
    }
    mx = new_mx;
  }
#pragma unroll
  for (int i = 0; i < kDimsPerLane; ++i) acc[i] /= sum;
  StoreHead(out + Row(g, b, t) * g.out_stride + h * g.hd, acc, g.hd);
  if (lane == 0) lse[(static_cast<int64_t>(b) * g.H + h) * g.T + t] = mx + logf(sum);
}

// One warp per (b, h, t): D = dout . out, then dq = sum_j ds_j k_j.
__global__ void BackwardDqKernel(__nv_bfloat16* dq, float* delta, const __nv_bfloat16* dout,
                                 const __nv_bfloat16* q, const __nv_bfloat16* k,
                                 const __nv_bfloat16* v, const __nv_bfloat16* out,
                                 const float* lse, int batch, Geometry g) {
  const int64_t warp = static_cast<int64_t>(blockIdx.x) * kWarpsPerBlock + threadIdx.x / kWarpSize;
  if (warp >= static_cast<int64_t>(batch) * g.H * g.T) return;
  const int t = static_cast<int>(warp % g.T);
  const int h = static_cast<int>((warp / g.T) % g.H);
  const int b = static_cast<int>(warp / (static_cast<int64_t>(g.T) * g.H));
  const int kvh = h / g.group;
  const int lane = threadIdx.x % kWarpSize;
  const int64_t o_off = Row(g, b, t) * g.out_stride + h * g.hd;
  float dor[kDimsPerLane], qr[kDimsPerLane], acc[kDimsPerLane];
  LoadHead(dor, dout + o_off, g.hd);
  LoadHead(qr, q + Row(g, b, t) * g.stride + h * g.hd, g.hd);
  const float D = DotWithHead(dor, out + o_off, g.hd);
  const int64_t stat = (static_cast<int64_t>(b) * g.H + h) * g.T + t;
  const float l = lse[stat];
  if (lane == 0) delta[stat] = D;
#pragma unroll
  for (int i = 0; i < kDimsPerLane; ++i) acc[i] = 0.f;
  for (int j = 0; j <= t; ++j) {
    const int64_t kv_off = Row(g, b, j) * g.stride + kvh * g.hd;
    const float p = expf(DotWithHead(qr, k + kv_off, g.hd) * g.scale - l);
    const float ds = p * (DotWithHead(dor, v + kv_off, g.hd) - D) * g.scale;
#pragma unroll
    for (int i = 0; i < kDimsPerLane; ++i) {
      const int d = lane + i * kWarpSize;
      if (d < g.hd) acc[i] += ds * __bfloat162float(k[kv_off + d]);
    }
  }
  StoreHead(dq + Row(g, b, t) * g.stride + h * g.hd, acc, g.hd);
}

// One warp per (b, kv head, key j): sums over the group's query heads (in order) and over
// queries t >= j.
__global__ void BackwardDkDvKernel(__nv_bfloat16* dk, __nv_bfloat16* dv, const float* delta,
                                   const __nv_bfloat16* dout, const __nv_bfloat16* q,
                                   const __nv_bfloat16* k, const __nv_bfloat16* v,
                                   const float* lse, int batch, Geometry g) {
  const int64_t warp = static_cast<int64_t>(blockIdx.x) * kWarpsPerBlock + threadIdx.x / kWarpSize;
  if (warp >= static_cast<int64_t>(batch) * g.KV * g.T) return;
  const int j = static_cast<int>(warp % g.T);
  const int kvh = static_cast<int>((warp / g.T) % g.KV);
  const int b = static_cast<int>(warp / (static_cast<int64_t>(g.T) * g.KV));
  const int lane = threadIdx.x % kWarpSize;
  const int64_t kv_off = Row(g, b, j) * g.stride + kvh * g.hd;
  float kr[kDimsPerLane], vr[kDimsPerLane], dk_acc[kDimsPerLane], dv_acc[kDimsPerLane];
  LoadHead(kr, k + kv_off, g.hd);
  LoadHead(vr, v + kv_off, g.hd);
#pragma unroll
  for (int i = 0; i < kDimsPerLane; ++i) dk_acc[i] = dv_acc[i] = 0.f;
  for (int h = kvh * g.group; h < (kvh + 1) * g.group; ++h) {
    for (int t = j; t < g.T; ++t) {
      const int64_t q_off = Row(g, b, t) * g.stride + h * g.hd;
      const int64_t o_off = Row(g, b, t) * g.out_stride + h * g.hd;
      const int64_t stat = (static_cast<int64_t>(b) * g.H + h) * g.T + t;
      const float p = expf(DotWithHead(kr, q + q_off, g.hd) * g.scale - lse[stat]);
      const float ds = p * (DotWithHead(vr, dout + o_off, g.hd) - delta[stat]) * g.scale;
#pragma unroll
      for (int i = 0; i < kDimsPerLane; ++i) {
        const int d = lane + i * kWarpSize;
        if (d < g.hd) {
          dk_acc[i] += ds * __bfloat162float(q[q_off + d]);
          dv_acc[i] += p * __bfloat162float(dout[o_off + d]);
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
