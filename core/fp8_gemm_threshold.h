// The automatic minimum GEMM size for FP8 layers: the measured size below which a Linear layer's
// FP8 training work is not faster than BF16, per recipe. It is the `auto_min_dim` both engines
// hand to PlanFp8Layers when the policy's min_gemm_dim is 0 (automatic), so choosing an FP8
// recipe never slows a model down and the CPU and GPU engines plan the same layers.
#pragma once

#include <array>

#include "core/recipe_config.h"

namespace fp8d {

// The sizes d at which `fp8d-gemm-bench --linear-sweep` measures square d x d Linear layers (and
// d x 4d, 4d x d) and from which it picks each recipe's threshold. Every measured threshold is
// one of these.
inline constexpr std::array<int, 10> kMinGemmDimGrid = {128,  256,  384,  512,  768,
                                                        1024, 1536, 2048, 3072, 4096};

// The smallest min(m, n, k) at which the recipe's FP8 Linear layer (weight cast, forward, dgrad,
// wgrad) is at least as fast as the BF16 one for every measured shape, on the H100; 0 = no
// threshold (every GEMM eligible). bf16 and recipes without a measurement answer 0.
int AutoMinGemmDim(RecipeKind kind);

}  // namespace fp8d
