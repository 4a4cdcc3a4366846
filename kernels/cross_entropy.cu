#include "kernels/cross_entropy.cuh"

#include <cstdint>

#include "kernels/cuda_check.h"
#include "kernels/device_common.cuh"

namespace fp8d::kernels {
namespace {

constexpr int kThreads = 512;
constexpr int kMeanThreads = 1024;
// Logits per 16-byte access on the vector path.
constexpr int kVec = 8;

template <int N>
__device__ __forceinline__ void LoadBf16(float (&x)[N], const __nv_bfloat16* p) {
  if constexpr (N == 1) {
    x[0] = __bfloat162float(*p);
  } else {
    static_assert(N == 8, "16-byte vectors only");
    const uint4 raw = *reinterpret_cast<const uint4*>(p);
    const __nv_bfloat162* pairs = reinterpret_cast<const __nv_bfloat162*>(&raw);
#pragma unroll
    for (int i = 0; i < N / 2; ++i) {
      const float2 f = __bfloat1622float2(pairs[i]);
      x[2 * i] = f.x;
      x[2 * i + 1] = f.y;
    }
  }
}

template <int N>
__device__ __forceinline__ void StoreBf16(__nv_bfloat16* p, const float (&x)[N]) {
  if constexpr (N == 1) {
    *p = __float2bfloat16_rn(x[0]);
  } else {
    uint4 raw;
    __nv_bfloat162* pairs = reinterpret_cast<__nv_bfloat162*>(&raw);
#pragma unroll
    for (int i = 0; i < N / 2; ++i) pairs[i] = __floats2bfloat162_rn(x[2 * i], x[2 * i + 1]);
    *reinterpret_cast<uint4*>(p) = raw;
  }
}

// N = kVec when the vocabulary is a multiple of 8 and the rows are 16-byte aligned, else 1.
template <int N>
__global__ void CrossEntropyKernel(float* row_losses, __nv_bfloat16* dlogits,
                                   const __nv_bfloat16* logits, const int32_t* targets, int vocab,
                                   float grad_scale) {
  __shared__ float shared[kWarpSize];
  const int64_t row = blockIdx.x;
  const __nv_bfloat16* lr = logits + row * vocab;
  const int32_t target = targets[row];
  // Read before any thread of the block can overwrite it with its gradient (in place).
  const float target_logit = threadIdx.x == 0 ? __bfloat162float(lr[target]) : 0.f;
  const int n_vec = vocab / N;
  // Per-thread running max and sum of exp(x - max), rescaled when the max grows.
  float mx = -INFINITY;
  float sum = 0.f;
  for (int jv = threadIdx.x; jv < n_vec; jv += blockDim.x) {
    float x[N];
    LoadBf16<N>(x, lr + static_cast<int64_t>(jv) * N);
    float vmax = x[0];
#pragma unroll
    for (int i = 1; i < N; ++i) vmax = fmaxf(vmax, x[i]);
    if (vmax > mx) {
      sum *= expf(mx - vmax);  // 0 * exp(-inf) = 0 on the first vector
      mx = vmax;
    }
#pragma unroll
    for (int i = 0; i < N; ++i) sum += expf(x[i] - mx);
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
  for (int jv = threadIdx.x; jv < n_vec; jv += blockDim.x) {
    float x[N];
    LoadBf16<N>(x, lr + static_cast<int64_t>(jv) * N);
#pragma unroll
    for (int i = 0; i < N; ++i) {
      const int j = jv * N + i;
      x[i] = (expf(x[i] - lse) - (j == target ? 1.f : 0.f)) * grad_scale;
    }
    StoreBf16<N>(dr + static_cast<int64_t>(jv) * N, x);
  }
}

bool Aligned16(const void* p) { return reinterpret_cast<uintptr_t>(p) % 16 == 0; }

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
  // Rows start 16-byte aligned when the buffers do and the row length is a multiple of 8.
  const bool vector_path = vocab % kVec == 0 && Aligned16(logits) &&
                           (dlogits == nullptr || Aligned16(dlogits));
  if (vector_path) {
    CrossEntropyKernel<kVec><<<rows, kThreads, 0, stream>>>(row_losses, dlogits, logits, targets,
                                                            vocab, grad_scale);
  } else {
    CrossEntropyKernel<1><<<rows, kThreads, 0, stream>>>(row_losses, dlogits, logits, targets,
                                                         vocab, grad_scale);
  }
  CUDA_CHECK_LAUNCH();
}

void MeanLoss(cudaStream_t stream, float* mean_loss, const float* row_losses, int rows) {
  FP8D_KERNELS_CHECK(rows > 0);
  MeanLossKernel<<<1, kMeanThreads, 0, stream>>>(mean_loss, row_losses, rows);
  CUDA_CHECK_LAUNCH();
}

}  // namespace fp8d::kernels
