#include "kernels/delayed_scaling.cuh"

#include "kernels/cuda_check.h"
#include "kernels/device_common.cuh"

namespace fp8d::kernels {
namespace {

constexpr int kThreads = 128;

// One thread per tensor: windows are short (Transformer Engine's default is 1024, typical 16)
// and a model has at most a few hundred FP8 tensors, so a serial walk per tensor is cheaper than
// a block-wide reduction per tensor and keeps the NaN-skipping fmaxf order of the CPU.
__global__ void DelayedScalingKernel(const float* __restrict__ amaxes,
                                     float* __restrict__ histories, int len,
                                     const float* __restrict__ fp8_max, int n_tensors,
                                     bool most_recent, int margin, float* __restrict__ scales,
                                     float* __restrict__ scale_inv) {
  const int t = blockIdx.x * blockDim.x + threadIdx.x;
  if (t >= n_tensors) return;
  float* window = histories + static_cast<int64_t>(t) * len;
  float reduced = 0.f;
  if (len > 0) {
    for (int i = len - 1; i > 0; --i) window[i] = window[i - 1];
    window[0] = amaxes[t];
    if (most_recent) {
      reduced = window[0];
    } else {
      for (int i = 0; i < len; ++i) reduced = fmaxf(reduced, window[i]);
    }
  }
  const float scale = DeviceComputeScale(reduced, fp8_max[t], margin, scales[t]);
  scales[t] = scale;
  if (scale_inv != nullptr) scale_inv[t] = 1.0f / scale;
}

}  // namespace

void DelayedScalingUpdate(const float* amaxes, float* histories, int history_len,
                          const float* fp8_max, int n_tensors, AmaxAlgo algo, int margin,
                          float* scales, float* scale_inv, cudaStream_t stream) {
  FP8D_KERNELS_CHECK(n_tensors >= 0 && history_len >= 0);
  if (n_tensors == 0) return;
  const int blocks = static_cast<int>(CeilDiv(n_tensors, kThreads));
  DelayedScalingKernel<<<blocks, kThreads, 0, stream>>>(amaxes, histories, history_len, fp8_max,
                                                        n_tensors, algo == AmaxAlgo::kMostRecent,
                                                        margin, scales, scale_inv);
  CUDA_CHECK_LAUNCH();
}

}  // namespace fp8d::kernels
