// The model's parameter tensors: names, shapes and the seeded initialisation every engine starts
// from. Names follow Hugging Face LlamaForCausalLM, except the fused projections
// (`self_attn.qkv_proj` rows = [q; k; v], `mlp.gate_up_proj` rows = [gate; up]) which the
// Hugging Face export splits.
#pragma once

#include <string>
#include <vector>

#include "core/model_config.h"
#include "core/tensor_map.h"

namespace fp8d {

struct ParamSpec {
  std::string name;
  std::vector<int64_t> shape;
  bool is_norm = false;        // RMSNorm gains: initialised to 1, no weight decay
};

// In a fixed order: embedding, then per layer (input_layernorm, qkv_proj, o_proj,
// post_attention_layernorm, gate_up_proj, down_proj), final norm, lm_head (untied only).
// Linear weights are [out_features, in_features].
std::vector<ParamSpec> ParamSpecs(const ModelConfig& config);

// Normal(0, init_std) for matrices, with the output projections (o_proj, down_proj) scaled by
// 1/sqrt(2 * n_layer) as in GPT-2; ones for norms. Same seed, same weights, on every engine.
TensorMap InitWeights(const ModelConfig& config, uint64_t seed);

// GEMM layer names used by the FP8 policy and telemetry, in model order:
// layers.{i}.attn.qkv, layers.{i}.attn.out, layers.{i}.mlp.gate_up, layers.{i}.mlp.down, lm_head.
std::vector<std::string> GemmLayerNames(const ModelConfig& config);

// The weight tensor that a GEMM layer multiplies by (lm_head maps to the embedding when tied).
std::string GemmLayerWeight(const ModelConfig& config, const std::string& layer);

}  // namespace fp8d
