// The automatic FP8 size rule: under a policy with min_gemm_dim 0 (automatic), a GEMM layer runs
// FP8 only when its volume m * n * k (tokens x out features x in features) reaches the measured
// volume at and above which the recipe's FP8 Linear layer (weight cast, forward, dgrad, wgrad)
// was never slower than the BF16 one on the H100. Both engines plan with it, so choosing an FP8
// recipe does not slow a model down and the CPU and GPU engines plan the same layers.
//
// Why a volume and not a minimum dimension: the measured gain depends on the token count as much
// as on the widths (a 2048 x 2048 layer loses at 2048 tokens and wins at 16384), and the smallest
// volume above every losing shape separates the sweep's wins from its losses at every token count.
#pragma once

#include <array>
#include <cstdint>
#include <limits>

#include "core/recipe_config.h"

namespace fp8d {

// The sizes d at which `fp8d-gemm-bench --linear-sweep` measures d x d, d x 4d and 4d x d Linear
// layers (at 2048, 8192 and 16384 tokens).
inline constexpr std::array<int, 10> kMinGemmDimGrid = {128,  256,  384,  512,  768,
                                                        1024, 1536, 2048, 3072, 4096};

// AutoMinGemmVolume for a recipe whose FP8 layers were slower than BF16 at every measured shape:
// no layer runs FP8 automatically (an explicit policy.min_gemm_dim still makes them FP8).
inline constexpr int64_t kNoAutomaticFp8 = std::numeric_limits<int64_t>::max();

// The smallest m * n * k at which the recipe's layers run FP8 under the automatic policy; 0 for
// bf16 and recipes without a measurement (mxfp8), kNoAutomaticFp8 when FP8 never won.
int64_t AutoMinGemmVolume(RecipeKind kind);

}  // namespace fp8d
