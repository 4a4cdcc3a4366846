// Elementwise helpers the step needs around the GEMMs: the bias-free residual add on BF16
// activations and in-place scaling of FP32 buffers (e.g. averaging gradients over micro-batches).
#pragma once

#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <cstdint>

namespace fp8d::kernels {

// out = a + b, summed in FP32 and rounded once. `out` may alias `a` or `b`.
void ResidualAdd(cudaStream_t stream, __nv_bfloat16* out, const __nv_bfloat16* a,
                 const __nv_bfloat16* b, int64_t n);

// x *= scale.
void ScaleInPlace(cudaStream_t stream, float* x, float scale, int64_t n);

}  // namespace fp8d::kernels
