// Per-element formulas shared by the kernels that produce a BF16 tensor and by the fused
// producers that cast the same values to FP8 (kernels/fp8_fused.cu): one definition, so both
// compile to the same FP32 operations and round identically, and the fused codes stay byte for
// byte those of the unfused kernel followed by the cast. Included only from .cu files.
#pragma once

#include <cuda_bf16.h>

namespace fp8d::kernels {

// RMSNorm's output y = x * rstd * w, in that order.
__device__ __forceinline__ __nv_bfloat16 RmsNormValue(float x, float rstd, float w) {
  return __float2bfloat16_rn(x * rstd * w);
}

__device__ __forceinline__ float Sigmoid(float x) { return 1.f / (1.f + expf(-x)); }

// h = silu(gate) * up.
__device__ __forceinline__ __nv_bfloat16 SwiGluValue(__nv_bfloat16 gate, __nv_bfloat16 up) {
  const float g = __bfloat162float(gate);
  const float u = __bfloat162float(up);
  return __float2bfloat16_rn(g * Sigmoid(g) * u);
}

// dgate = dh * up * silu'(gate), dup = dh * silu(gate).
__device__ __forceinline__ void SwiGluGrad(__nv_bfloat16 gate, __nv_bfloat16 up, __nv_bfloat16 dh,
                                           __nv_bfloat16* dgate, __nv_bfloat16* dup) {
  const float g = __bfloat162float(gate);
  const float u = __bfloat162float(up);
  const float d = __bfloat162float(dh);
  const float s = Sigmoid(g);
  const float silu = g * s;
  const float dsilu = s * (1.f + g * (1.f - s));
  *dgate = __float2bfloat16_rn(d * u * dsilu);
  *dup = __float2bfloat16_rn(d * silu);
}

}  // namespace fp8d::kernels
