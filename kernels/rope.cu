#include "kernels/rope.cuh"

#include <algorithm>
#include <cstdint>

#include "kernels/cuda_check.h"
#include "kernels/device_common.cuh"

namespace fp8d::kernels {
namespace {

constexpr int kThreads = 256;

// One thread per (row, head, pair). sign = +1 rotates, -1 applies the inverse.
__global__ void RopeKernel(__nv_bfloat16* x, int64_t rows, int seq_len, int n_heads, int head_dim,
                           int row_stride, float theta, float sign) {
  const int half = head_dim / 2;
  const int64_t n = rows * n_heads * half;
  for (int64_t idx = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; idx < n;
       idx += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int i = static_cast<int>(idx % half);
    const int64_t rest = idx / half;
    const int h = static_cast<int>(rest % n_heads);
    const int64_t row = rest / n_heads;
    const int t = static_cast<int>(row % seq_len);
    // Same expression as the reference so the angles agree to the last bit of powf.
    const float freq = powf(theta, -2.f * static_cast<float>(i) / head_dim);
    const float angle = static_cast<float>(t) * freq;
    const float c = cosf(angle);
    const float s = sign * sinf(angle);
    __nv_bfloat16* p = x + row * row_stride + h * head_dim + 2 * i;
    const float x0 = __bfloat162float(p[0]);
    const float x1 = __bfloat162float(p[1]);
    p[0] = __float2bfloat16_rn(x0 * c - x1 * s);
    p[1] = __float2bfloat16_rn(x0 * s + x1 * c);
  }
}

void Launch(cudaStream_t stream, __nv_bfloat16* x, int batch, int seq_len, int n_heads,
            int head_dim, int row_stride, float theta, float sign) {
  FP8D_KERNELS_CHECK(head_dim % 2 == 0);
  FP8D_KERNELS_CHECK(row_stride >= n_heads * head_dim);
  const int64_t rows = static_cast<int64_t>(batch) * seq_len;
  const int64_t n = rows * n_heads * (head_dim / 2);
  if (n == 0) return;
  const auto blocks = static_cast<unsigned>(std::min<int64_t>(CeilDiv(n, kThreads), 65536));
  RopeKernel<<<blocks, kThreads, 0, stream>>>(x, rows, seq_len, n_heads, head_dim, row_stride,
                                              theta, sign);
  CUDA_CHECK_LAUNCH();
}

}  // namespace

void RopeForward(cudaStream_t stream, __nv_bfloat16* x, int batch, int seq_len, int n_heads,
                 int head_dim, int row_stride, float theta) {
  Launch(stream, x, batch, seq_len, n_heads, head_dim, row_stride, theta, 1.f);
}

void RopeBackward(cudaStream_t stream, __nv_bfloat16* dx, int batch, int seq_len, int n_heads,
                  int head_dim, int row_stride, float theta) {
  Launch(stream, dx, batch, seq_len, n_heads, head_dim, row_stride, theta, -1.f);
}

}  // namespace fp8d::kernels
