// Rotary position embedding, FP32 reference.
//
// Convention: within each head, consecutive pairs (x[2i], x[2i+1]) are rotated by the angle
// pos * theta^(-2i / head_dim), pos being the token's position in its sequence (0-based). This is
// the interleaved (GPT-J / original RoFormer) layout; a Hugging Face export permutes the Q and K
// rows of qkv_proj into its half-split layout.
#pragma once

namespace fp8d::ref {

// Rotates in place the first n_heads * head_dim values of each of the batch * seq_len rows of
// `x`, rows `row_stride` floats apart (so Q or K can be rotated inside the fused QKV buffer).
void RopeForward(float* x, int batch, int seq_len, int n_heads, int head_dim, int row_stride,
                 float theta);

// The transpose of the rotation (rotation by the negative angle), applied in place to gradients.
void RopeBackward(float* dx, int batch, int seq_len, int n_heads, int head_dim, int row_stride,
                  float theta);

}  // namespace fp8d::ref
