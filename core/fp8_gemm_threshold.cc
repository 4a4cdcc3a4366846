#include "core/fp8_gemm_threshold.h"

namespace fp8d {
namespace {

struct MeasuredThreshold {
  RecipeKind kind;
  int64_t min_gemm_volume;
};

// The `threshold scaling=... min_gemm_volume=...` lines of `fp8d-gemm-bench --linear-sweep` on
// the H100 80GB HBM3, 2026-11-22 (table and command in tests/bench/RESULTS.md): for each recipe,
// the smallest measured m * n * k such that FP8 was at least as fast as BF16 at every measured
// shape of that volume or more.
//  - delayed: 2^35 (e.g. 8192 x 2048 x 2048, 1.14x); the largest losing shapes are 1.93e10
//    (2048 x 1536 x 6144 at 0.99x, 8192 x 768 x 3072 at 0.96x).
//  - current: 9 x 2^33 (e.g. 8192 x 3072 x 3072, 1.16x); 16384 x 1024 x 4096 (6.9e10) lost, 0.98x
//    (current scaling reads each activation and gradient twice: amax, then cast).
//  - rowwise and blockwise (1x128): slower than BF16 at all 90 shapes, up to 16384 x 4096 x
//    16384 (0.95x and 0.82x): their transposed requantization of X and dY is two more passes,
//    and 1x128 GEMMs run without fast accumulation on sm_90.
constexpr MeasuredThreshold kMeasured[] = {
    {RecipeKind::kDelayed, int64_t{1} << 35},
    {RecipeKind::kCurrent, int64_t{9} << 33},
    {RecipeKind::kRowwise, kNoAutomaticFp8},
    {RecipeKind::kBlockwise, kNoAutomaticFp8},
};

}  // namespace

int64_t AutoMinGemmVolume(RecipeKind kind) {
  for (const MeasuredThreshold& m : kMeasured) {
    if (m.kind == kind) return m.min_gemm_volume;
  }
  return 0;  // bf16 has no FP8 layers; mxfp8 cannot run (or be measured) on Hopper
}

}  // namespace fp8d
