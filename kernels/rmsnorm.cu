#include "kernels/rmsnorm.cuh"

#include "kernels/cuda_check.h"
#include "kernels/device_common.cuh"
#include "kernels/elementwise_math.cuh"

namespace fp8d::kernels {
namespace {

constexpr int kRowsPerBlock = 8;             // one warp per row
constexpr int kDweightRowsPerChunk = 128;    // rows one partial sum of dweight covers
constexpr int kDweightThreads = 256;         // columns per block in the dweight passes

__global__ void RmsNormForwardKernel(__nv_bfloat16* y, float* rstd, const __nv_bfloat16* x,
                                     const float* weight, int64_t rows, int channels,
                                     float eps) {
  const int lane = threadIdx.x % kWarpSize;
  const int64_t row = static_cast<int64_t>(blockIdx.x) * kRowsPerBlock + threadIdx.x / kWarpSize;
  if (row >= rows) return;
  const __nv_bfloat16* xr = x + row * channels;
  float sum_sq = 0.f;
  for (int c = lane; c < channels; c += kWarpSize) {
    const float v = __bfloat162float(xr[c]);
    sum_sq += v * v;
  }
  sum_sq = WarpSum(sum_sq);
  const float r = rsqrtf(sum_sq / channels + eps);
  if (y != nullptr) {  // null: only rstd (RmsNormForwardToFp8 writes the output itself)
    __nv_bfloat16* yr = y + row * channels;
    for (int c = lane; c < channels; c += kWarpSize) {
      yr[c] = RmsNormValue(__bfloat162float(xr[c]), r, weight[c]);
    }
  }
  if (rstd != nullptr && lane == 0) rstd[row] = r;
}

__global__ void RmsNormBackwardDxKernel(__nv_bfloat16* dx, const __nv_bfloat16* dy,
                                        const __nv_bfloat16* x, const float* weight,
                                        const float* rstd, int64_t rows, int channels,
                                        bool accumulate_dx) {
  const int lane = threadIdx.x % kWarpSize;
  const int64_t row = static_cast<int64_t>(blockIdx.x) * kRowsPerBlock + threadIdx.x / kWarpSize;
  if (row >= rows) return;
  const __nv_bfloat16* xr = x + row * channels;
  const __nv_bfloat16* dyr = dy + row * channels;
  const float r = rstd[row];
  // mean over c of g[c] * xhat[c], with g = dy * w and xhat = x * rstd.
  float dot = 0.f;
  for (int c = lane; c < channels; c += kWarpSize) {
    dot += __bfloat162float(dyr[c]) * weight[c] * __bfloat162float(xr[c]) * r;
  }
  const float mean_gx = WarpSum(dot) / channels;
  __nv_bfloat16* dxr = dx + row * channels;
  for (int c = lane; c < channels; c += kWarpSize) {
    const float g = __bfloat162float(dyr[c]) * weight[c];
    const float xhat = __bfloat162float(xr[c]) * r;
    float v = r * (g - xhat * mean_gx);
    if (accumulate_dx) v += __bfloat162float(dxr[c]);
    dxr[c] = __float2bfloat16_rn(v);
  }
}

// The same computation with the row held in registers: one warp per row, 16-byte loads of dy
// and x (8 BF16 each), kVecPerLane of them per lane, so dy and x are read from memory once.
// Needs channels % 8 == 0 and channels <= kVecPerLane * 8 * 32.
template <int kVecPerLane>
__global__ void __launch_bounds__(kRowsPerBlock * kWarpSize)
    RmsNormBackwardDxVecKernel(__nv_bfloat16* dx, const __nv_bfloat16* dy,
                               const __nv_bfloat16* __restrict__ x,
                               const float* __restrict__ weight,
                               const float* __restrict__ rstd, int64_t rows, int channels,
                               bool accumulate_dx) {
  const int lane = threadIdx.x % kWarpSize;
  const int64_t row = static_cast<int64_t>(blockIdx.x) * kRowsPerBlock + threadIdx.x / kWarpSize;
  if (row >= rows) return;
  const int n_vec = channels / 8;
  const uint4* dyr = reinterpret_cast<const uint4*>(dy + row * channels);
  const uint4* xr = reinterpret_cast<const uint4*>(x + row * channels);
  const float r = rstd[row];
  uint4 dy_v[kVecPerLane], x_v[kVecPerLane];
  float dot = 0.f;
#pragma unroll
  for (int j = 0; j < kVecPerLane; ++j) {
    const int v = lane + j * kWarpSize;
    if (v >= n_vec) break;
    dy_v[j] = dyr[v];
    x_v[j] = xr[v];
    const __nv_bfloat16* dyb = reinterpret_cast<const __nv_bfloat16*>(&dy_v[j]);
    const __nv_bfloat16* xb = reinterpret_cast<const __nv_bfloat16*>(&x_v[j]);
#pragma unroll
    for (int e = 0; e < 8; ++e) {
      dot += __bfloat162float(dyb[e]) * weight[v * 8 + e] * __bfloat162float(xb[e]) * r;
    }
  }
  const float mean_gx = WarpSum(dot) / channels;
  uint4* dxr = reinterpret_cast<uint4*>(dx + row * channels);
#pragma unroll
  for (int j = 0; j < kVecPerLane; ++j) {
    const int v = lane + j * kWarpSize;
    if (v >= n_vec) break;
    const __nv_bfloat16* dyb = reinterpret_cast<const __nv_bfloat16*>(&dy_v[j]);
    const __nv_bfloat16* xb = reinterpret_cast<const __nv_bfloat16*>(&x_v[j]);
    uint4 prev = make_uint4(0, 0, 0, 0);
    if (accumulate_dx) prev = dxr[v];
    const __nv_bfloat16* pb = reinterpret_cast<const __nv_bfloat16*>(&prev);
    alignas(16) __nv_bfloat16 out[8];
#pragma unroll
    for (int e = 0; e < 8; ++e) {
      const float g = __bfloat162float(dyb[e]) * weight[v * 8 + e];
      const float xhat = __bfloat162float(xb[e]) * r;
      float val = r * (g - xhat * mean_gx);
      if (accumulate_dx) val += __bfloat162float(pb[e]);
      out[e] = __float2bfloat16_rn(val);
    }
    dxr[v] = *reinterpret_cast<const uint4*>(out);
  }
}

// partial[chunk, c] = sum over the chunk's rows of dy * x * rstd, rows in increasing order.
__global__ void RmsNormDweightPartialKernel(float* partial, const __nv_bfloat16* dy,
                                            const __nv_bfloat16* x, const float* rstd,
                                            int64_t rows, int channels) {
  const int c = blockIdx.x * blockDim.x + threadIdx.x;
  if (c >= channels) return;
  const int64_t begin = static_cast<int64_t>(blockIdx.y) * kDweightRowsPerChunk;
  const int64_t end = min(begin + kDweightRowsPerChunk, rows);
  float acc = 0.f;
  for (int64_t i = begin; i < end; ++i) {
    acc += __bfloat162float(dy[i * channels + c]) * __bfloat162float(x[i * channels + c]) * rstd[i];
  }
  partial[static_cast<int64_t>(blockIdx.y) * channels + c] = acc;
}

__global__ void RmsNormDweightFinalizeKernel(float* dweight, const float* partial, int chunks,
                                             int channels) {
  const int c = blockIdx.x * blockDim.x + threadIdx.x;
  if (c >= channels) return;
  float acc = 0.f;
  for (int k = 0; k < chunks; ++k) acc += partial[static_cast<int64_t>(k) * channels + c];
  dweight[c] += acc;
}

int DweightChunks(int64_t rows) { return static_cast<int>(CeilDiv(rows, kDweightRowsPerChunk)); }

}  // namespace

void RmsNormForward(cudaStream_t stream, __nv_bfloat16* y, float* rstd, const __nv_bfloat16* x,
                    const float* weight, int64_t rows, int channels, float eps) {
  if (rows == 0) return;
  const int blocks = static_cast<int>(CeilDiv(rows, kRowsPerBlock));
  RmsNormForwardKernel<<<blocks, kRowsPerBlock * kWarpSize, 0, stream>>>(y, rstd, x, weight, rows,
                                                                          channels, eps);
  CUDA_CHECK_LAUNCH();
}

size_t RmsNormBackwardWorkspaceBytes(int64_t rows, int channels) {
  return sizeof(float) * static_cast<size_t>(DweightChunks(rows)) * channels;
}

void RmsNormBackward(cudaStream_t stream, __nv_bfloat16* dx, float* dweight,
                     const __nv_bfloat16* dy, const __nv_bfloat16* x, const float* weight,
                     const float* rstd, int64_t rows, int channels, bool accumulate_dx,
                     void* workspace, size_t workspace_bytes) {
  if (rows == 0) return;
  FP8D_KERNELS_CHECK(workspace_bytes >= RmsNormBackwardWorkspaceBytes(rows, channels));
  // dweight first: with dx aliasing dy, the dx pass overwrites dy.
  const int chunks = DweightChunks(rows);
  FP8D_KERNELS_CHECK(chunks <= 65535);  // grid.y limit: rows <= 8.4M
  float* partial = static_cast<float*>(workspace);
  const dim3 grid(static_cast<unsigned>(CeilDiv(channels, kDweightThreads)), chunks);
  RmsNormDweightPartialKernel<<<grid, kDweightThreads, 0, stream>>>(partial, dy, x, rstd, rows,
                                                                    channels);
  CUDA_CHECK_LAUNCH();
  RmsNormDweightFinalizeKernel<<<static_cast<unsigned>(CeilDiv(channels, kDweightThreads)),
                                 kDweightThreads, 0, stream>>>(dweight, partial, chunks, channels);
  CUDA_CHECK_LAUNCH();
  const int blocks = static_cast<int>(CeilDiv(rows, kRowsPerBlock));
  const int threads = kRowsPerBlock * kWarpSize;
  const bool vec = channels % 8 == 0 && reinterpret_cast<uintptr_t>(dx) % 16 == 0 &&
                   reinterpret_cast<uintptr_t>(dy) % 16 == 0 &&
                   reinterpret_cast<uintptr_t>(x) % 16 == 0;
  const int vec_per_lane = static_cast<int>(CeilDiv(channels / 8, kWarpSize));
  if (vec && vec_per_lane <= 1) {
    RmsNormBackwardDxVecKernel<1><<<blocks, threads, 0, stream>>>(dx, dy, x, weight, rstd, rows,
                                                                  channels, accumulate_dx);
  } else if (vec && vec_per_lane <= 2) {
    RmsNormBackwardDxVecKernel<2><<<blocks, threads, 0, stream>>>(dx, dy, x, weight, rstd, rows,
                                                                  channels, accumulate_dx);
  } else if (vec && vec_per_lane <= 4) {
    RmsNormBackwardDxVecKernel<4><<<blocks, threads, 0, stream>>>(dx, dy, x, weight, rstd, rows,
                                                                  channels, accumulate_dx);
  } else if (vec && vec_per_lane <= 8) {
    RmsNormBackwardDxVecKernel<8><<<blocks, threads, 0, stream>>>(dx, dy, x, weight, rstd, rows,
                                                                  channels, accumulate_dx);
  } else {
    RmsNormBackwardDxKernel<<<blocks, threads, 0, stream>>>(dx, dy, x, weight, rstd, rows,
                                                            channels, accumulate_dx);
  }
  CUDA_CHECK_LAUNCH();
}

}  // namespace fp8d::kernels
