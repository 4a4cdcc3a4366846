#include "core/fp8_gemm_threshold.h"

namespace fp8d {
namespace {

struct MeasuredThreshold {
  RecipeKind kind;
  int min_gemm_dim;
};

// Measured values: the `threshold scaling=... min_gemm_dim=...` lines of
//   fp8d-gemm-bench --linear-sweep
// on the H100 (deploy/gpu-bundle.sh, then bundle/bin/fp8d-gemm-bench --linear-sweep on the GPU
// machine), recorded with the run's date in tests/bench/RESULTS.md. Copy each recipe's line here
// (blockwise is the sweep's 1x128 scaling); a `none` means FP8 was slower even at the largest
// shapes, which no entry here can express: keep that recipe's layers BF16 by policy instead.
//
// NOT YET MEASURED: the sweep has not run on a GPU. RESULTS.md so far has forward GEMMs alone
// (fp8d-gemm-bench at the 124m and 1b shapes, all faster in FP8), which leaves out the casts and
// the backward GEMMs and has no shape smaller than 768, so it supports no threshold: until the
// sweep fills this table every entry is 0 (no threshold), as before the table existed.
constexpr MeasuredThreshold kMeasured[] = {
    {RecipeKind::kDelayed, 0},
    {RecipeKind::kCurrent, 0},
    {RecipeKind::kRowwise, 0},
    {RecipeKind::kBlockwise, 0},
};

}  // namespace

int AutoMinGemmDim(RecipeKind kind) {
  for (const MeasuredThreshold& m : kMeasured) {
    if (m.kind == kind) return m.min_gemm_dim;
  }
  return 0;  // bf16 has no FP8 layers; mxfp8 cannot run (or be measured) on Hopper
}

}  // namespace fp8d
