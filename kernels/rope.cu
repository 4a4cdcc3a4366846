#include "kernels/rope.cuh"

#include <algorithm>
#include <cstdint>

#include "kernels/cuda_check.h"
#include "kernels/device_common.cuh"

namespace fp8d::kernels {
namespace {

constexpr int kThreads = 256;

// One thread per (row, pair), looping over the row's heads: the angle depends only on the
// position and the pair, so its sine and cosine (the costly part) are computed once per row and
// pair, not once per head. Consecutive threads take consecutive pairs, so each head's loads are
// contiguous.
template <bool kPaired>
__global__ void RopeKernel(__nv_bfloat16* x, int64_t rows, int seq_len, int n_heads, int head_dim,
                           int row_stride, float theta, float sign) {
  const int half = head_dim / 2;
  const int64_t n = rows * half;
  for (int64_t idx = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; idx < n;
       idx += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t row = idx / half;
    const int i = static_cast<int>(idx - row * half);
    const int t = static_cast<int>(row % seq_len);
    // Same expression as the reference so the angles agree to the last bit of powf.
    const float freq = powf(theta, -2.f * static_cast<float>(i) / head_dim);
    const float angle = static_cast<float>(t) * freq;
    const float c = cosf(angle);
    const float s = sign * sinf(angle);
    __nv_bfloat16* p = x + row * row_stride + 2 * i;
    for (int h = 0; h < n_heads; ++h, p += head_dim) {
      float x0, x1;
      if constexpr (kPaired) {
        const float2 v = __bfloat1622float2(*reinterpret_cast<const __nv_bfloat162*>(p));
        x0 = v.x;
        x1 = v.y;
      } else {
        x0 = __bfloat162float(p[0]);
        x1 = __bfloat162float(p[1]);
      }
      const __nv_bfloat16 y0 = __float2bfloat16_rn(x0 * c - x1 * s);
      const __nv_bfloat16 y1 = __float2bfloat16_rn(x0 * s + x1 * c);
      if constexpr (kPaired) {
        *reinterpret_cast<__nv_bfloat162*>(p) = __halves2bfloat162(y0, y1);
      } else {
        p[0] = y0;
        p[1] = y1;
      }
    }
  }
}

void Launch(cudaStream_t stream, __nv_bfloat16* x, int batch, int seq_len, int n_heads,
            int head_dim, int row_stride, float theta, float sign) {
  FP8D_KERNELS_CHECK(head_dim % 2 == 0);
  FP8D_KERNELS_CHECK(row_stride >= n_heads * head_dim);
  const int64_t rows = static_cast<int64_t>(batch) * seq_len;
  const int64_t n = rows * (head_dim / 2);
  if (n == 0 || n_heads == 0) return;
  const auto blocks = static_cast<unsigned>(std::min<int64_t>(CeilDiv(n, kThreads), 65536));
  // Pairs are 4-byte aligned when the rows are (head_dim is even).
  if (reinterpret_cast<uintptr_t>(x) % 4 == 0 && row_stride % 2 == 0) {
    RopeKernel<true><<<blocks, kThreads, 0, stream>>>(x, rows, seq_len, n_heads, head_dim,
                                                      row_stride, theta, sign);
  } else {
    RopeKernel<false><<<blocks, kThreads, 0, stream>>>(x, rows, seq_len, n_heads, head_dim,
                                                       row_stride, theta, sign);
  }
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
