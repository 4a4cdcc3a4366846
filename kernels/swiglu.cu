#include "kernels/swiglu.cuh"

#include <algorithm>

#include "kernels/cuda_check.h"
#include "kernels/device_common.cuh"

namespace fp8d::kernels {
namespace {

constexpr int kThreads = 256;

__device__ __forceinline__ float Sigmoid(float x) { return 1.f / (1.f + expf(-x)); }

__global__ void SwiGluForwardKernel(__nv_bfloat16* h, const __nv_bfloat16* gate_up, int64_t rows,
                                    int d_ff) {
  const int64_t n = rows * d_ff;
  for (int64_t idx = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; idx < n;
       idx += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t row = idx / d_ff;
    const int64_t j = idx - row * d_ff;
    const float g = __bfloat162float(gate_up[row * 2 * d_ff + j]);
    const float u = __bfloat162float(gate_up[row * 2 * d_ff + d_ff + j]);
    h[idx] = __float2bfloat16_rn(g * Sigmoid(g) * u);
  }
}

__global__ void SwiGluBackwardKernel(__nv_bfloat16* dgate_up, const __nv_bfloat16* dh,
                                     const __nv_bfloat16* gate_up, int64_t rows, int d_ff) {
  const int64_t n = rows * d_ff;
  for (int64_t idx = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; idx < n;
       idx += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t row = idx / d_ff;
    const int64_t j = idx - row * d_ff;
    const int64_t gi = row * 2 * d_ff + j;
    const int64_t ui = gi + d_ff;
    const float g = __bfloat162float(gate_up[gi]);
    const float u = __bfloat162float(gate_up[ui]);
    const float d = __bfloat162float(dh[idx]);
    const float s = Sigmoid(g);
    const float silu = g * s;
    const float dsilu = s * (1.f + g * (1.f - s));
    dgate_up[gi] = __float2bfloat16_rn(d * u * dsilu);
    dgate_up[ui] = __float2bfloat16_rn(d * silu);
  }
}

unsigned GridFor(int64_t n) {
  // Grid-stride loops: enough blocks to fill the GPU, capped so the launch stays legal.
  return static_cast<unsigned>(std::min<int64_t>(CeilDiv(n, kThreads), 65536));
}

}  // namespace

void SwiGluForward(cudaStream_t stream, __nv_bfloat16* h, const __nv_bfloat16* gate_up,
                   int64_t rows, int d_ff) {
  const int64_t n = rows * d_ff;
  if (n == 0) return;
  SwiGluForwardKernel<<<GridFor(n), kThreads, 0, stream>>>(h, gate_up, rows, d_ff);
  CUDA_CHECK_LAUNCH();
}

void SwiGluBackward(cudaStream_t stream, __nv_bfloat16* dgate_up, const __nv_bfloat16* dh,
                    const __nv_bfloat16* gate_up, int64_t rows, int d_ff) {
  const int64_t n = rows * d_ff;
  if (n == 0) return;
  SwiGluBackwardKernel<<<GridFor(n), kThreads, 0, stream>>>(dgate_up, dh, gate_up, rows, d_ff);
  CUDA_CHECK_LAUNCH();
}

}  // namespace fp8d::kernels
