#include "kernels/grad_norm.cuh"

#include "kernels/cuda_check.h"
#include "kernels/device_common.cuh"

namespace fp8d::kernels {
namespace {

constexpr int kThreads = 256;
constexpr int kFinalizeThreads = 1024;

__global__ void SquaredNormPartialsKernel(double* partials, const float* grad, int64_t n) {
  __shared__ double shared[kWarpSize];
  double acc = 0.0;
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const double g = grad[i];
    acc += g * g;
  }
  acc = BlockSum(acc, shared);
  if (threadIdx.x == 0) partials[blockIdx.x] = acc;
}

__global__ void GradNormFinalizeKernel(float* norm, float* clip_factor, const double* partials,
                                       int n_partials, float max_norm) {
  __shared__ double shared[kWarpSize];
  double acc = 0.0;
  for (int i = threadIdx.x; i < n_partials; i += blockDim.x) acc += partials[i];
  acc = BlockSum(acc, shared);
  if (threadIdx.x != 0) return;
  const float nrm = static_cast<float>(sqrt(acc));
  if (norm != nullptr) *norm = nrm;
  if (clip_factor != nullptr) {
    float f = 1.f;
    if (!isfinite(nrm)) {
      f = NAN;
    } else if (max_norm > 0.f && nrm > max_norm) {
      f = max_norm / nrm;
    }
    *clip_factor = f;
  }
}

}  // namespace

void GradSquaredNormPartials(cudaStream_t stream, double* partials, const float* grad,
                             int64_t n) {
  SquaredNormPartialsKernel<<<kGradNormBlocks, kThreads, 0, stream>>>(partials, grad, n);
  CUDA_CHECK_LAUNCH();
}

void GradNormFinalize(cudaStream_t stream, float* norm, float* clip_factor, const double* partials,
                      int n_partials, float max_norm) {
  GradNormFinalizeKernel<<<1, kFinalizeThreads, 0, stream>>>(norm, clip_factor, partials,
                                                             n_partials, max_norm);
  CUDA_CHECK_LAUNCH();
}

}  // namespace fp8d::kernels
