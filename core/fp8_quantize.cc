#include "core/fp8_quantize.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

#include "absl/base/internal/raw_logging.h"
#include "core/fp8_format.h"

namespace fp8d {
namespace {

// |a| folded into a running max that stays NaN once it has seen a NaN.
inline float AmaxFold(float running, float x) {
  const float a = std::fabs(x);
  return (std::isnan(running) || std::isnan(a)) ? std::numeric_limits<float>::quiet_NaN()
                                                : std::max(running, a);
}

// Current-scaling scale of one block, as Transformer Engine computes it for FP32 inputs:
// blocks of zeros (or with NaN/inf) keep scale 1, and an amax so small that fp8_max / amax
// overflows uses the largest finite float instead of inf (so 1 / scale stays nonzero).
float BlockScale(float amax, float fp8_max) {
  if (!std::isfinite(amax) || !(amax > 0.f)) return 1.f;
  const float scale = fp8_max / amax;
  return std::isinf(scale) ? std::numeric_limits<float>::max() : scale;
}

// Quantizes in[i] * scale, writes the dequantized value to out[i] and counts what happened.
// `in` and `out` may alias: each element is read before it is written.
template <uint8_t (*Encode)(float), float (*Decode)(uint8_t)>
void QuantizeRun(const float* in, float* out, int64_t n, float scale, float fp8_max,
                 QuantStats* stats) {
  const float inv_scale = 1.0f / scale;
  float amax = stats->amax;
  int64_t nonzero = 0, saturated = 0, underflow = 0;
  for (int64_t i = 0; i < n; ++i) {
    const float x = in[i];
    const float scaled = x * scale;
    const uint8_t code = Encode(scaled);
    out[i] = Decode(code) * inv_scale;
    amax = AmaxFold(amax, x);
    const bool is_nonzero = x != 0.f;
    nonzero += is_nonzero;
    saturated += std::fabs(scaled) > fp8_max;
    underflow += is_nonzero && (code & 0x7Fu) == 0;
  }
  stats->amax = amax;
  stats->count += n;
  stats->nonzero += nonzero;
  stats->saturated += saturated;
  stats->underflow += underflow;
}

void QuantizeRun(const float* in, float* out, int64_t n, Fp8Format format, float scale,
                 QuantStats* stats) {
  if (format == Fp8Format::kE4M3) {
    QuantizeRun<FloatToE4M3, E4M3ToFloat>(in, out, n, scale, kE4M3Max, stats);
  } else {
    QuantizeRun<FloatToE5M2, E5M2ToFloat>(in, out, n, scale, kE5M2Max, stats);
  }
}

}  // namespace

void QuantStats::Merge(const QuantStats& o) {
  amax = (std::isnan(amax) || std::isnan(o.amax)) ? std::numeric_limits<float>::quiet_NaN()
                                                  : std::max(amax, o.amax);
  count += o.count;
  nonzero += o.nonzero;
  saturated += o.saturated;
  underflow += o.underflow;
}

float Amax(absl::Span<const float> x) {
  float amax = 0.f;
  for (float v : x) amax = AmaxFold(amax, v);
  return amax;
}

QuantStats QuantizeDequantize(absl::Span<const float> in, absl::Span<float> out, Fp8Format format,
                              float scale) {
  ABSL_RAW_CHECK(in.size() == out.size(), "quantize: input and output sizes differ");
  // Chunks run on several threads. Each element's result is its own; the statistics are a
  // NaN-sticky max and integer counts, which merge to the same values in any order.
  constexpr int64_t kChunk = int64_t{1} << 16;
  const int64_t n = static_cast<int64_t>(in.size());
  const int64_t chunks = (n + kChunk - 1) / kChunk;
  std::vector<QuantStats> partial(static_cast<size_t>(std::max<int64_t>(chunks, 1)));
#pragma omp parallel for schedule(static) if (chunks > 1)
  for (int64_t c = 0; c < chunks; ++c) {
    const int64_t first = c * kChunk;
    QuantizeRun(in.data() + first, out.data() + first, std::min(kChunk, n - first), format, scale,
                &partial[static_cast<size_t>(c)]);
  }
  QuantStats stats;
  for (const QuantStats& p : partial) stats.Merge(p);
  return stats;
}

QuantStats QuantizeDequantizeBlocks(const float* in, float* out, int rows, int cols, int block_rows,
                                    int block_cols, Fp8Format format, std::vector<float>* scales) {
  ABSL_RAW_CHECK(rows >= 0 && cols >= 0, "matrix dims must be >= 0");
  ABSL_RAW_CHECK(block_rows > 0 && block_cols > 0, "block dims must be > 0");
  ABSL_RAW_CHECK(scales != nullptr, "scales output is required");
  const int blocks_down = (rows + block_rows - 1) / block_rows;
  const int blocks_across = (cols + block_cols - 1) / block_cols;
  scales->assign(static_cast<size_t>(blocks_down) * blocks_across, 1.f);
  const float fp8_max = Fp8Max(format);

  QuantStats stats;
  for (int br = 0; br < blocks_down; ++br) {
    const int r0 = br * block_rows;
    const int r1 = std::min(rows, r0 + block_rows);
    for (int bc = 0; bc < blocks_across; ++bc) {
      const int c0 = bc * block_cols;
      const int width = std::min(cols, c0 + block_cols) - c0;
      // The whole block's amax is taken before any element is written, so out may alias in.
      float amax = 0.f;
      for (int r = r0; r < r1; ++r) {
        const float* row = in + static_cast<int64_t>(r) * cols + c0;
        for (int c = 0; c < width; ++c) amax = AmaxFold(amax, row[c]);
      }
      const float scale = BlockScale(amax, fp8_max);
      (*scales)[static_cast<size_t>(br) * blocks_across + bc] = scale;
      for (int r = r0; r < r1; ++r) {
        const int64_t offset = static_cast<int64_t>(r) * cols + c0;
        QuantizeRun(in + offset, out + offset, width, format, scale, &stats);
      }
    }
  }
  return stats;
}

}  // namespace fp8d
