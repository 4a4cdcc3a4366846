// SwiGLU on the fused gate/up projection's output. Each row of `gate_up` is [gate (d_ff); up
// (d_ff)] (the weight's rows are [gate; up]), and
//   h[i, j] = silu(gate[i, j]) * up[i, j],   silu(g) = g * sigmoid(g).
// BF16 in and out, FP32 arithmetic.
#pragma once

#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <cstdint>

namespace fp8d::kernels {

// h: [rows, d_ff]; gate_up: [rows, 2 * d_ff].
void SwiGluForward(cudaStream_t stream, __nv_bfloat16* h, const __nv_bfloat16* gate_up,
                   int64_t rows, int d_ff);

// dgate_up: [rows, 2 * d_ff] = [dgate; dup] per row with
//   dgate = dh * up * silu'(gate),  dup = dh * silu(gate).
// dgate_up may alias gate_up (each element is read before it is written, by the same thread).
void SwiGluBackward(cudaStream_t stream, __nv_bfloat16* dgate_up, const __nv_bfloat16* dh,
                    const __nv_bfloat16* gate_up, int64_t rows, int d_ff);

}  // namespace fp8d::kernels
