#include "core/layer_policy.h"

#include <algorithm>

#include "absl/base/internal/raw_logging.h"
#include "absl/strings/match.h"
#include "core/model_weights.h"
#include "core/user_regex.h"

namespace fp8d {
namespace {

constexpr char kLmHead[] = "lm_head";

std::vector<std::unique_ptr<const RE2>> CompileAll(const std::vector<std::string>& patterns) {
  std::vector<std::unique_ptr<const RE2>> out;
  out.reserve(patterns.size());
  for (const std::string& p : patterns) {
    auto re = CompileUserRegex(p, "recipe.policy regex");
    // ResolveRecipe compiles every pattern, so reaching here means an unvalidated recipe.
    if (!re.ok()) ABSL_RAW_LOG(FATAL, "%s was not validated", re.status().ToString().c_str());
    out.push_back(*std::move(re));
  }
  return out;
}

bool MatchesAny(const std::vector<std::unique_ptr<const RE2>>& res, const std::string& name) {
  return std::any_of(res.begin(), res.end(),
                     [&](const std::unique_ptr<const RE2>& re) { return FullMatch(*re, name); });
}

}  // namespace

GemmShape LayerGemmShape(const ModelConfig& model, const std::string& layer,
                         int64_t tokens_per_micro_batch) {
  GemmShape s;
  s.m = tokens_per_micro_batch;
  if (layer == kLmHead) {
    s.n = model.vocab_size;
    s.k = model.d_model;
  } else if (absl::StartsWith(layer, "layers.") && absl::EndsWith(layer, ".attn.qkv")) {
    s.n = model.qkv_dim();
    s.k = model.d_model;
  } else if (absl::StartsWith(layer, "layers.") && absl::EndsWith(layer, ".attn.out")) {
    s.n = model.d_model;
    s.k = model.d_model;
  } else if (absl::StartsWith(layer, "layers.") && absl::EndsWith(layer, ".mlp.gate_up")) {
    s.n = 2 * int64_t{model.d_ff};
    s.k = model.d_model;
  } else if (absl::StartsWith(layer, "layers.") && absl::EndsWith(layer, ".mlp.down")) {
    s.n = model.d_model;
    s.k = model.d_ff;
  } else {
    ABSL_RAW_LOG(FATAL, "not a GEMM layer name: \"%s\"", layer.c_str());
  }
  return s;
}

LayerPlan PlanFp8Layers(const ModelConfig& model, const RecipeConfig& recipe, int64_t step,
                        int64_t tokens_per_micro_batch, int64_t auto_min_volume) {
  LayerPlan plan;
  plan.layers = GemmLayerNames(model);
  plan.fp8.assign(plan.layers.size(), false);
  const LayerPolicyConfig& policy = recipe.policy;
  if (!recipe.is_fp8() || step < policy.bf16_warmup_steps) return plan;

  const bool automatic = policy.min_gemm_dim == 0;
  const auto include = CompileAll(policy.include);
  const auto exclude = CompileAll(policy.exclude);
  for (size_t i = 0; i < plan.layers.size(); ++i) {
    const std::string& name = plan.layers[i];
    if (policy.skip_lm_head && name == kLmHead) continue;
    const GemmShape s = LayerGemmShape(model, name, tokens_per_micro_batch);
    if (!automatic && std::min({s.m, s.n, s.k}) < policy.min_gemm_dim) continue;
    // Volumes of model layers stay far below 2^63 (2^20 tokens x 2^21 x 2^21 at most here).
    if (automatic && s.m * s.n * s.k < auto_min_volume) continue;
    if (!include.empty() && !MatchesAny(include, name)) continue;
    if (MatchesAny(exclude, name)) continue;
    plan.fp8[i] = true;
  }
  return plan;
}

}  // namespace fp8d
