// RMSNorm (Llama): y = x / sqrt(mean(x^2) + eps) * w, FP32 reference.
#pragma once

namespace fp8d::ref {

// x, y: [rows, dim]; w: [dim]; rstd: [rows], saved for backward (1 / sqrt(mean(x^2) + eps)).
void RmsNormForward(const float* x, const float* w, float* y, float* rstd, int rows, int dim,
                    float eps);

// dx: [rows, dim], overwritten (may not alias dy). dw: [dim], accumulated (+=) so that
// micro-batches and the rows of one batch sum into the same gradient.
void RmsNormBackward(const float* dy, const float* x, const float* w, const float* rstd, float* dx,
                     float* dw, int rows, int dim);

}  // namespace fp8d::ref
