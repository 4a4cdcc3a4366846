// Decides which GEMM layers run FP8 under a recipe's per-layer policy.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "core/engine.h"
#include "core/model_config.h"
#include "core/recipe_config.h"

namespace fp8d {

// Shape of a layer's forward GEMM: [m, k] x [k, n] with m = tokens per micro-batch.
struct GemmShape {
  int64_t m = 0, n = 0, k = 0;
};

// layers from GemmLayerNames(model). A layer runs FP8 when the recipe is FP8, step >=
// bf16_warmup_steps, it is not the LM head under skip_lm_head, it is large enough, it matches an
// include regex (or there are none) and matches no exclude regex. Large enough: min(m, n, k) >=
// policy.min_gemm_dim when the policy sets one, else (automatic) m * n * k >= auto_min_volume.
// skip_attention_qk keeps the Q and K rows of attn.qkv in BF16 but leaves the layer itself FP8
// (the V rows use FP8). Engines pass auto_min_volume = AutoMinGemmVolume(recipe.kind)
// (core/fp8_gemm_threshold.h): the volume below which FP8 was measured slower than BF16 for that
// recipe, so a default policy never makes a model slower. A job that wants every layer FP8 sets
// min_gemm_dim explicitly: 16, the smallest size the GPU's FP8 GEMMs take.
LayerPlan PlanFp8Layers(const ModelConfig& model, const RecipeConfig& recipe, int64_t step,
                        int64_t tokens_per_micro_batch, int64_t auto_min_volume);

// Forward GEMM shape of a named layer.
GemmShape LayerGemmShape(const ModelConfig& model, const std::string& layer,
                         int64_t tokens_per_micro_batch);

}  // namespace fp8d
