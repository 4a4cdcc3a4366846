// Linear layer without bias, FP32 reference: y = x W^T with W stored [out_features, in_features]
// as in Hugging Face. The two backward GEMMs are separate functions because FP8 quantizes their
// operands differently (see core/ref/fp8_linear.h).
#pragma once

namespace fp8d::ref {

// y[m, n] = sum_k x[m, k] * w[n, k]. Overwrites y.
void LinearForward(const float* x, const float* w, float* y, int m, int k, int n);

// dx[m, k] = sum_n dy[m, n] * w[n, k]. Overwrites dx.
void LinearBackwardInput(const float* dy, const float* w, float* dx, int m, int k, int n);

// dw[n, k] += sum_m dy[m, n] * x[m, k]. Accumulates, so micro-batches sum into one gradient.
void LinearBackwardWeight(const float* dy, const float* x, float* dw, int m, int k, int n);

}  // namespace fp8d::ref
