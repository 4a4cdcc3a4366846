// A Linear layer whose GEMM operands are FP8-quantized (emulated: quantize, saturate, round to
// nearest even, dequantize), the reference the CUDA engine's FP8 GEMMs are tested against.
//
// The three GEMMs of a Linear layer, W [n, k], X [m, k], dY [m, n]:
//   forward  Y  = Q(X) Q(W)^T      contracts over k: X and W quantized along their rows (k)
//   backward dX = Q(dY) Q(W)       contracts over n: dY along its rows (n), W along its columns (n)
//   backward dW = Q(dY)^T Q(X)     contracts over m: dY and X along their columns (m)
// X and W use the forward format (E4M3), dY the gradient format (E5M2 under hybrid).
// Per-tensor scaling quantizes a tensor the same way whatever the layout, so only the block
// modes differ between the three GEMMs: each operand is requantized in the layout of the GEMM
// that consumes it, with blocks running along that GEMM's contraction dimension. A 128x128
// weight block grid is the same set of blocks in either layout.
#pragma once

#include "core/fp8_quantize.h"
#include "core/recipe_config.h"

namespace fp8d::ref {

enum class Fp8Scaling {
  kTensor,         // one given scale for the tensor (delayed scaling)
  kCurrentTensor,  // one scale from this tensor's amax now: ComputeScale(amax, max, margin, 1)
  kBlocks,         // a scale per block, from the block's amax (rowwise, blockwise)
};

struct Fp8OperandQuant {
  Fp8Scaling scaling = Fp8Scaling::kTensor;
  Fp8Format format = Fp8Format::kE4M3;
  float scale = 1.f;   // kTensor
  int margin = 0;      // kCurrentTensor
  int block_rows = 1;  // kBlocks, in the consuming GEMM's layout (contraction along columns)
  int block_cols = 0;  // kBlocks; 0 = the whole contraction dimension (rowwise)
};

struct Fp8LinearQuant {
  Fp8OperandQuant input;
  Fp8OperandQuant weight;
  Fp8OperandQuant grad_output;
  // The first `fp32_out_rows` output features (rows of W, columns of Y and dY) bypass FP8: their
  // forward, dX contribution and dW stay FP32. skip_attention_qk sets this to the Q and K rows of
  // the fused QKV projection.
  int fp32_out_rows = 0;
};

// Quantization stats of one layer's operands: input and weight from the forward GEMM's layout,
// grad_output from the dX GEMM's layout (amax is the same in every layout).
struct Fp8LinearStats {
  QuantStats input;
  QuantStats weight;
  QuantStats grad_output;
};

// Quantize-dequantizes `in` [rows, cols] (row-major) for a GEMM that contracts along its columns,
// or along its rows when `contract_rows` (blocks then run down the columns). `out` may alias `in`.
QuantStats QuantizeOperand(const float* in, float* out, int rows, int cols, bool contract_rows,
                           const Fp8OperandQuant& quant);

// y[m, n] = Q(x) Q(w)^T (see the top of this file). Merges operand stats into `stats` if non-null.
void Fp8LinearForward(const float* x, const float* w, float* y, int m, int k, int n,
                      const Fp8LinearQuant& quant, Fp8LinearStats* stats);

// dx[m, k] = Q(dy) Q(w) (overwritten); dw[n, k] += Q(dy)^T Q(x) (accumulated).
void Fp8LinearBackward(const float* dy, const float* x, const float* w, float* dx, float* dw, int m,
                       int k, int n, const Fp8LinearQuant& quant, Fp8LinearStats* stats);

}  // namespace fp8d::ref
