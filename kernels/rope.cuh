// Rotary position embedding in place on BF16 Q or K inside the fused QKV buffer, matching
// core/ref/rope.h: within each head the consecutive pairs (x[2i], x[2i+1]) rotate by
// pos * theta^(-2i / head_dim), pos being the token's 0-based position in its sequence
// (interleaved layout). Angles and rotation in FP32.
#pragma once

#include <cuda_bf16.h>
#include <cuda_runtime.h>

namespace fp8d::kernels {

// Rotates the first n_heads * head_dim values of each of the batch * seq_len rows of x, rows
// `row_stride` elements apart.
void RopeForward(cudaStream_t stream, __nv_bfloat16* x, int batch, int seq_len, int n_heads,
                 int head_dim, int row_stride, float theta);

// The inverse rotation (the transpose), applied in place to gradients.
void RopeBackward(cudaStream_t stream, __nv_bfloat16* dx, int batch, int seq_len, int n_heads,
                  int head_dim, int row_stride, float theta);

}  // namespace fp8d::kernels
