#include "kernels/swiglu.cuh"

#include <cstdint>

#include "kernels/cuda_check.h"
#include "kernels/device_common.cuh"

namespace fp8d::kernels {
namespace {

constexpr int kThreads = 256;

__device__ __forceinline__ float Sigmoid(float x) { return 1.f / (1.f + expf(-x)); }

// Block (x, y) covers row x, columns [y * blockDim.x, (y + 1) * blockDim.x): no integer
// division per element.
__global__ void SwiGluForwardKernel(__nv_bfloat16* h, const __nv_bfloat16* gate_up, int d_ff) {
  const int j = blockIdx.y * blockDim.x + threadIdx.x;
  if (j >= d_ff) return;
  const int64_t row = blockIdx.x;
  const float g = __bfloat162float(gate_up[row * 2 * d_ff + j]);
  const float u = __bfloat162float(gate_up[row * 2 * d_ff + d_ff + j]);
  h[row * d_ff + j] = __float2bfloat16_rn(g * Sigmoid(g) * u);
}

__global__ void SwiGluBackwardKernel(__nv_bfloat16* dgate_up, const __nv_bfloat16* dh,
                                     const __nv_bfloat16* gate_up, int d_ff) {
  const int j = blockIdx.y * blockDim.x + threadIdx.x;
  if (j >= d_ff) return;
  const int64_t row = blockIdx.x;
  const int64_t gi = row * 2 * d_ff + j;
  const int64_t ui = gi + d_ff;
  const float g = __bfloat162float(gate_up[gi]);
  const float u = __bfloat162float(gate_up[ui]);
  const float d = __bfloat162float(dh[row * d_ff + j]);
  const float s = Sigmoid(g);
  const float silu = g * s;
  const float dsilu = s * (1.f + g * (1.f - s));
  dgate_up[gi] = __float2bfloat16_rn(d * u * dsilu);
  dgate_up[ui] = __float2bfloat16_rn(d * silu);
}

dim3 GridFor(int64_t rows, int d_ff) {
  return dim3(static_cast<unsigned>(rows), static_cast<unsigned>(CeilDiv(d_ff, kThreads)));
}

}  // namespace

void SwiGluForward(cudaStream_t stream, __nv_bfloat16* h, const __nv_bfloat16* gate_up,
                   int64_t rows, int d_ff) {
  if (rows == 0 || d_ff == 0) return;
  SwiGluForwardKernel<<<GridFor(rows, d_ff), kThreads, 0, stream>>>(h, gate_up, d_ff);
  CUDA_CHECK_LAUNCH();
}

void SwiGluBackward(cudaStream_t stream, __nv_bfloat16* dgate_up, const __nv_bfloat16* dh,
                    const __nv_bfloat16* gate_up, int64_t rows, int d_ff) {
  if (rows == 0 || d_ff == 0) return;
  SwiGluBackwardKernel<<<GridFor(rows, d_ff), kThreads, 0, stream>>>(dgate_up, dh, gate_up,
                                                                     d_ff);
  CUDA_CHECK_LAUNCH();
}

}  // namespace fp8d::kernels
