#include "kernels/cross_entropy.cuh"

#include "kernels/cuda_check.h"
#include "kernels/device_common.cuh"

namespace fp8d::kernels {
namespace {

constexpr int kThreads = 512;
constexpr int kMeanThreads = 1024;

__global__ void CrossEntropyKernel(float* row_losses, __nv_bfloat16* dlogits,
                                   const __nv_bfloat16* logits, const int32_t* targets, int vocab,
                                   float grad_scale) {
  __shared__ float shared[kWarpSize];
  const int64_t row = blockIdx.x;
  const __nv_bfloat16* lr = logits + row * vocab;
  const int32_t target = targets[row];
  // Read before any thread of the block can overwrite it with its gradient (in place).
  const float target_logit = threadIdx.x == 0 ? __bfloat162float(lr[target]) : 0.f;
  // Per-thread online max and sum of exp(x - max).
  float mx = -INFINITY;
  float sum = 0.f;
  for (int j = threadIdx.x; j < vocab; j += blockDim.x) {
    const float x = __bfloat162float(lr[j]);
    if (x > mx) {
      sum = sum * expf(mx - x) + 1.f;
      mx = x;
    } else {
      sum += expf(x - mx);
    }
  }
  const float row_max = BlockMax(mx, shared);
  const float scaled = mx == -INFINITY ? 0.f : sum * expf(mx - row_max);
  const float row_sum = BlockSum(scaled, shared);
  const float lse = row_max + logf(row_sum);
  if (threadIdx.x == 0) row_losses[row] = lse - target_logit;
  if (dlogits == nullptr) return;
  // In place is safe: each element is read and then written by the same thread, and the
  // target's logit was read before the reductions, whose barriers precede every write.
  __nv_bfloat16* dr = dlogits + row * vocab;
  for (int j = threadIdx.x; j < vocab; j += blockDim.x) {
    const float p = expf(__bfloat162float(lr[j]) - lse);
    dr[j] = __float2bfloat16_rn((p - (j == target ? 1.f : 0.f)) * grad_scale);
  }
}

__global__ void MeanLossKernel(float* mean_loss, const float* row_losses, int rows) {
  __shared__ double shared[kWarpSize];
  double acc = 0.0;
  for (int i = threadIdx.x; i < rows; i += blockDim.x) acc += row_losses[i];
  acc = BlockSum(acc, shared);
  if (threadIdx.x == 0) *mean_loss = static_cast<float>(acc / rows);
}

}  // namespace

void CrossEntropyForwardBackward(cudaStream_t stream, float* row_losses, __nv_bfloat16* dlogits,
                                 const __nv_bfloat16* logits, const int32_t* targets, int rows,
                                 int vocab, float grad_scale) {
  if (rows == 0) return;
  CrossEntropyKernel<<<rows, kThreads, 0, stream>>>(row_losses, dlogits, logits, targets, vocab,
                                                    grad_scale);
  CUDA_CHECK_LAUNCH();
}

void MeanLoss(cudaStream_t stream, float* mean_loss, const float* row_losses, int rows) {
  FP8D_KERNELS_CHECK(rows > 0);
  MeanLossKernel<<<1, kMeanThreads, 0, stream>>>(mean_loss, row_losses, rows);
  CUDA_CHECK_LAUNCH();
}

}  // namespace fp8d::kernels
