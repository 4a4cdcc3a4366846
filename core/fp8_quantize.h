// CPU emulation of FP8 quantization: quantize with a scale, saturate, round to nearest even,
// then dequantize with the same scale, so a CPU GEMM on the result computes what an FP8 GEMM
// with those scales would (up to accumulation order). dequant(q) = Fp8ToFloat(q) * (1.0f / scale).
#pragma once

#include <cstdint>
#include <vector>

#include "absl/types/span.h"
#include "core/recipe_config.h"

namespace fp8d {

struct QuantStats {
  float amax = 0.f;            // max |x| of the input (NaN if any input is NaN)
  int64_t count = 0;           // elements
  int64_t nonzero = 0;         // elements != 0
  int64_t saturated = 0;       // |x * scale| > fp8_max (clipped to +-max)
  int64_t underflow = 0;       // x != 0 but quantized to 0

  float frac_saturated() const { return count ? float(saturated) / count : 0.f; }
  float frac_underflow() const { return nonzero ? float(underflow) / nonzero : 0.f; }
  void Merge(const QuantStats& o);
};

// max |x|; NaN propagates.
float Amax(absl::Span<const float> x);

// One scale for the whole tensor. `out` may alias `in`.
QuantStats QuantizeDequantize(absl::Span<const float> in, absl::Span<float> out, Fp8Format format,
                              float scale);

// Matrix [rows, cols] row-major, contraction along cols. Scales are computed from the amax of each
// block of `block_rows` x `block_cols` (current scaling: scale = fp8_max / amax, 1 when amax is 0,
// NaN or inf, FLT_MAX when fp8_max / amax overflows),
// block (r, c) at scales[r * ceil(cols / block_cols) + c]. Rowwise = (1, cols); 1x128 = (1, 128);
// 128x128 = (128, 128). Partial edge blocks use their own amax.
QuantStats QuantizeDequantizeBlocks(const float* in, float* out, int rows, int cols, int block_rows,
                                    int block_cols, Fp8Format format, std::vector<float>* scales);

}  // namespace fp8d
