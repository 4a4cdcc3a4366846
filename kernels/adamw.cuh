// AdamW on FP32 master weights with FP32 gradients and moments, matching core/ref/adamw.h:
//   g = grad * grad_scale
//   m = beta1 m + (1 - beta1) g;  v = beta2 v + (1 - beta2) g^2
//   p -= lr * ((m / (1 - beta1^step)) / (sqrt(v / (1 - beta2^step)) + eps) + weight_decay * p)
// and, when asked, the BF16 copy of the updated weights that the GEMMs read.
#pragma once

#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <cstdint>

namespace fp8d::kernels {

struct AdamWParams {
  float lr = 0.f;
  float beta1 = 0.9f;
  float beta2 = 0.95f;
  float eps = 1e-8f;
  float weight_decay = 0.f;  // 0 for RMSNorm gains
  int64_t step = 1;          // 1-based count of updates including this one (bias correction)
};

// grad_scale: one device float (the clipping factor from GradNormFinalize), or nullptr for 1.
// When it is not finite (a non-finite gradient norm) nothing is written: the step is skipped
// without the host having to look at the norm first.
// param_bf16: the GEMM copy, rewritten from the new FP32 weights; nullptr to leave out.
void AdamWUpdate(cudaStream_t stream, float* param, __nv_bfloat16* param_bf16, float* m, float* v,
                 const float* grad, int64_t n, const AdamWParams& params,
                 const float* grad_scale);

}  // namespace fp8d::kernels
