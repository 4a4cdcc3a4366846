// SwiGLU activation, FP32 reference: h = silu(gate) * up with silu(g) = g * sigmoid(g).
#pragma once

namespace fp8d::ref {

// gate_up: [rows, 2 * dim], each row [gate (dim) | up (dim)] as the fused gate_up_proj writes it.
// h: [rows, dim].
void SwiGluForward(const float* gate_up, float* h, int rows, int dim);

// dgate_up: [rows, 2 * dim], overwritten.
void SwiGluBackward(const float* dh, const float* gate_up, float* dgate_up, int rows, int dim);

}  // namespace fp8d::ref
