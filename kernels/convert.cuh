// BF16 <-> FP32 conversions (round-to-nearest-even into BF16), e.g. to upload FP32 weights as
// the BF16 copy the GEMMs read, or to widen BF16 activations for a check.
#pragma once

#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <cstdint>

namespace fp8d::kernels {

void FloatToBf16(cudaStream_t stream, __nv_bfloat16* out, const float* in, int64_t n);
void Bf16ToFloat(cudaStream_t stream, float* out, const __nv_bfloat16* in, int64_t n);

}  // namespace fp8d::kernels
