// FP8 casts fused into the kernels that produce their input, for per-tensor scaling with a scale
// known before the tensor exists (delayed scaling): the producer computes each value in
// registers, rounds it to BF16 exactly as the unfused kernel writes it, and stores only the FP8
// codes, row-major and transposed (the copies an FP8 Linear needs), with the cast statistics.
// The BF16 tensor is never written or read back, and the codes are byte for byte those of the
// unfused kernel followed by CastToFp8:
//
//   RmsNormForwardToFp8   = RmsNormForward  (+ CastToFp8 of y)         the QKV and MLP-up inputs
//   SwiGluForwardToFp8    = SwiGluForward   (+ CastToFp8 of h)         the down projection's input
//   SwiGluBackwardToFp8   = SwiGluBackward  (+ CastToFp8 of dgate_up)  the MLP-up projection's dY
//
// Each needs rows and the cast tensor's columns to be multiples of 64 (FusedFp8CastFits) and
// 16-byte aligned BF16 inputs.
#pragma once

#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <cstdint>

#include "core/recipe_config.h"
#include "kernels/fp8_cast.cuh"

namespace fp8d::kernels {

// Where a fused producer writes a tensor's FP8 copies (an Fp8Linear operand).
struct Fp8CastTarget {
  Fp8Format format = Fp8Format::kE4M3;
  const float* scale = nullptr;    // the quantization scale, read on the device
  uint8_t* data = nullptr;         // [rows, cols]
  uint8_t* data_t = nullptr;       // [cols, rows], or null when not needed
  float* scale_inv = nullptr;      // written: 1 / scale
  Fp8CastStats* stats = nullptr;   // overwritten with this tensor's statistics
};

bool FusedFp8CastFits(int64_t rows, int64_t cols);

// rstd [rows] as RmsNormForward writes it; the FP8 copies of y = x * rstd * weight [rows, channels].
void RmsNormForwardToFp8(cudaStream_t stream, float* rstd, const __nv_bfloat16* x,
                         const float* weight, int64_t rows, int channels, float eps,
                         const Fp8CastTarget& target);

// The FP8 copies of h = silu(gate) * up [rows, d_ff] from gate_up [rows, 2 * d_ff].
void SwiGluForwardToFp8(cudaStream_t stream, const __nv_bfloat16* gate_up, int64_t rows, int d_ff,
                        const Fp8CastTarget& target);

// The FP8 copies of dgate_up [rows, 2 * d_ff] from dh [rows, d_ff] and gate_up.
void SwiGluBackwardToFp8(cudaStream_t stream, const __nv_bfloat16* dh,
                         const __nv_bfloat16* gate_up, int64_t rows, int d_ff,
                         const Fp8CastTarget& target);

}  // namespace fp8d::kernels
