#include "kernels/residual.cuh"

#include <algorithm>

#include "kernels/cuda_check.h"
#include "kernels/device_common.cuh"

namespace fp8d::kernels {
namespace {

constexpr int kThreads = 256;

__global__ void ResidualAddKernel(__nv_bfloat16* out, const __nv_bfloat16* a,
                                  const __nv_bfloat16* b, int64_t n) {
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    out[i] = __float2bfloat16_rn(__bfloat162float(a[i]) + __bfloat162float(b[i]));
  }
}

__global__ void ScaleKernel(float* x, float scale, int64_t n) {
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    x[i] *= scale;
  }
}

unsigned GridFor(int64_t n) {
  return static_cast<unsigned>(std::min<int64_t>(CeilDiv(n, kThreads), 65536));
}

}  // namespace

void ResidualAdd(cudaStream_t stream, __nv_bfloat16* out, const __nv_bfloat16* a,
                 const __nv_bfloat16* b, int64_t n) {
  if (n == 0) return;
  ResidualAddKernel<<<GridFor(n), kThreads, 0, stream>>>(out, a, b, n);
  CUDA_CHECK_LAUNCH();
}

void ScaleInPlace(cudaStream_t stream, float* x, float scale, int64_t n) {
  if (n == 0) return;
  ScaleKernel<<<GridFor(n), kThreads, 0, stream>>>(x, scale, n);
  CUDA_CHECK_LAUNCH();
}

}  // namespace fp8d::kernels
