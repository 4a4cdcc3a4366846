// RMSNorm forward and backward on BF16 activations with FP32 gains:
//   y[i, c] = x[i, c] * rstd[i] * w[c],  rstd[i] = 1 / sqrt(mean_c(x[i, c]^2) + eps)
// All arithmetic is FP32. The weight gradient is reduced in two deterministic passes (fixed
// row chunks, then a sum over chunks in order), so it is bit-identical from run to run.
#pragma once

#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <cstddef>
#include <cstdint>

namespace fp8d::kernels {

// y: [rows, channels] (may be nullptr: rstd only); rstd: [rows] (saved for backward; may be
// nullptr).
void RmsNormForward(cudaStream_t stream, __nv_bfloat16* y, float* rstd, const __nv_bfloat16* x,
                    const float* weight, int64_t rows, int channels, float eps);

// Scratch bytes RmsNormBackward needs for `rows` x `channels`.
size_t RmsNormBackwardWorkspaceBytes(int64_t rows, int channels);

// dx = d/dx (written, or added to dx when `accumulate_dx`, e.g. into the residual gradient);
// dweight += sum over rows of dy * x * rstd (FP32, always accumulated).
// dx may alias dy when `accumulate_dx` is false. `rstd` is the forward's output.
void RmsNormBackward(cudaStream_t stream, __nv_bfloat16* dx, float* dweight,
                     const __nv_bfloat16* dy, const __nv_bfloat16* x, const float* weight,
                     const float* rstd, int64_t rows, int channels, bool accumulate_dx,
                     void* workspace, size_t workspace_bytes);

}  // namespace fp8d::kernels
