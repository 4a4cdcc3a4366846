// Per-layer FP8 policy: which GEMM layers run FP8 under a recipe, and the GEMM shapes it uses.
#include "core/layer_policy.h"

#include <algorithm>
#include <cstdint>
#include <string>
#include <vector>

#include "core/fp8_gemm_threshold.h"
#include "core/model_weights.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace fp8d {
namespace {

using ::testing::ElementsAre;

constexpr int64_t kTokens = 256;

// 2 layers, d_model 64, 4 heads of 16 with 2 KV heads: qkv_dim = 64 + 2 * 32 = 128.
ModelConfig SmallModel() {
  ModelConfig m;
  m.n_layer = 2;
  m.d_model = 64;
  m.n_head = 4;
  m.n_kv_head = 2;
  m.d_ff = 192;
  m.vocab_size = 256;
  m.max_seq_len = 128;
  return m;
}

RecipeConfig Delayed() {
  RecipeConfig r;
  r.kind = RecipeKind::kDelayed;
  return r;
}

// Names of the layers the plan runs in FP8.
std::vector<std::string> Fp8Layers(const LayerPlan& plan) {
  std::vector<std::string> out;
  for (size_t i = 0; i < plan.layers.size(); ++i) {
    if (plan.fp8[i]) out.push_back(plan.layers[i]);
  }
  return out;
}

TEST(LayerPolicyTest, GemmShapesFollowTheModel) {
  const ModelConfig m = SmallModel();
  auto shape = [&](const std::string& layer) {
    const GemmShape s = LayerGemmShape(m, layer, kTokens);
    return std::vector<int64_t>{s.m, s.n, s.k};
  };
  EXPECT_THAT(shape("layers.0.attn.qkv"), ElementsAre(kTokens, 128, 64));
  EXPECT_THAT(shape("layers.1.attn.out"), ElementsAre(kTokens, 64, 64));
  EXPECT_THAT(shape("layers.0.mlp.gate_up"), ElementsAre(kTokens, 384, 64));
  EXPECT_THAT(shape("layers.1.mlp.down"), ElementsAre(kTokens, 64, 192));
  EXPECT_THAT(shape("lm_head"), ElementsAre(kTokens, 256, 64));
}

TEST(LayerPolicyTest, Bf16RecipeRunsNoLayerInFp8) {
  const LayerPlan plan = PlanFp8Layers(SmallModel(), RecipeConfig{}, 0, kTokens, 0);
  EXPECT_EQ(plan.layers.size(), 9u);
  EXPECT_EQ(plan.fp8.size(), 9u);
  EXPECT_EQ(plan.fp8_count(), 0);
}

TEST(LayerPolicyTest, DefaultPolicySkipsOnlyLmHead) {
  const LayerPlan plan = PlanFp8Layers(SmallModel(), Delayed(), 0, kTokens, 0);
  EXPECT_EQ(plan.layers.back(), "lm_head");
  EXPECT_EQ(plan.fp8_count(), 8);
  EXPECT_FALSE(plan.fp8.back());
}

TEST(LayerPolicyTest, LmHeadRunsFp8WhenNotSkipped) {
  RecipeConfig r = Delayed();
  r.policy.skip_lm_head = false;
  const LayerPlan plan = PlanFp8Layers(SmallModel(), r, 0, kTokens, 0);
  EXPECT_EQ(plan.fp8_count(), 9);
}

TEST(LayerPolicyTest, EveryFp8RecipeUsesThePolicy) {
  for (RecipeKind kind :
       {RecipeKind::kCurrent, RecipeKind::kRowwise, RecipeKind::kBlockwise, RecipeKind::kMxfp8}) {
    RecipeConfig r = Delayed();
    r.kind = kind;
    EXPECT_EQ(PlanFp8Layers(SmallModel(), r, 0, kTokens, 0).fp8_count(), 8) << RecipeKindName(kind);
  }
}

TEST(LayerPolicyTest, IncludeRegexMustMatchWholeName) {
  RecipeConfig r = Delayed();
  r.policy.include = {"attn"};  // a substring only: matches nothing
  EXPECT_EQ(PlanFp8Layers(SmallModel(), r, 0, kTokens, 0).fp8_count(), 0);
  r.policy.include = {"layers\\.[0-9]+\\.attn\\..*"};
  EXPECT_THAT(Fp8Layers(PlanFp8Layers(SmallModel(), r, 0, kTokens, 0)),
              ElementsAre("layers.0.attn.qkv", "layers.0.attn.out", "layers.1.attn.qkv",
                          "layers.1.attn.out"));
}

TEST(LayerPolicyTest, AnyIncludeSufficesAndExcludeWins) {
  RecipeConfig r = Delayed();
  r.policy.include = {"layers\\.0\\..*", ".*\\.mlp\\.down"};
  r.policy.exclude = {".*qkv"};
  EXPECT_THAT(Fp8Layers(PlanFp8Layers(SmallModel(), r, 0, kTokens, 0)),
              ElementsAre("layers.0.attn.out", "layers.0.mlp.gate_up", "layers.0.mlp.down",
                          "layers.1.mlp.down"));
}

TEST(LayerPolicyTest, ExcludeAloneRemovesMatchingLayers) {
  RecipeConfig r = Delayed();
  r.policy.exclude = {".*mlp\\.down", "layers\\.1\\.attn\\.qkv"};
  EXPECT_THAT(Fp8Layers(PlanFp8Layers(SmallModel(), r, 0, kTokens, 0)),
              ElementsAre("layers.0.attn.qkv", "layers.0.attn.out", "layers.0.mlp.gate_up",
                          "layers.1.attn.out", "layers.1.mlp.gate_up"));
}

TEST(LayerPolicyTest, IncludeCanBringBackNothingTheLmHeadRuleSkips) {
  RecipeConfig r = Delayed();
  r.policy.include = {"lm_head"};
  EXPECT_EQ(PlanFp8Layers(SmallModel(), r, 0, kTokens, 0).fp8_count(), 0);
}

TEST(LayerPolicyTest, MinGemmDimComparesSmallestOfMNK) {
  RecipeConfig r = Delayed();
  r.policy.skip_lm_head = false;
  // Every layer has a dimension of 64 (d_model): 64 passes, 65 does not.
  r.policy.min_gemm_dim = 64;
  EXPECT_EQ(PlanFp8Layers(SmallModel(), r, 0, kTokens, 0).fp8_count(), 9);
  r.policy.min_gemm_dim = 65;
  EXPECT_EQ(PlanFp8Layers(SmallModel(), r, 0, kTokens, 0).fp8_count(), 0);
  // Few tokens per micro-batch make m the smallest dimension.
  r.policy.min_gemm_dim = 64;
  EXPECT_EQ(PlanFp8Layers(SmallModel(), r, 0, 32, 0).fp8_count(), 0);
}

TEST(LayerPolicyTest, MinDimSeparatesSmallAndLargeLayers) {
  ModelConfig m = SmallModel();
  m.d_model = 512;
  m.n_head = 8;
  m.n_kv_head = 2;  // qkv_dim = 512 + 2 * 128 = 768
  m.d_ff = 256;
  RecipeConfig r = Delayed();
  r.policy.min_gemm_dim = 512;
  // qkv (n 768, k 512), out (512, 512) and gate_up (n 512, k 512) qualify; down has k 256.
  EXPECT_THAT(Fp8Layers(PlanFp8Layers(m, r, 0, 1024, 0)),
              ElementsAre("layers.0.attn.qkv", "layers.0.attn.out", "layers.0.mlp.gate_up",
                          "layers.1.attn.qkv", "layers.1.attn.out", "layers.1.mlp.gate_up"));
}

TEST(LayerPolicyTest, AutomaticVolumeAppliesOnlyWhenPolicyHasNone) {
  RecipeConfig r = Delayed();
  const ModelConfig m = SmallModel();
  // The smallest layer volume qualifies every layer; one more keeps the smallest BF16.
  int64_t smallest = kNoAutomaticFp8;
  for (const std::string& layer : GemmLayerNames(m)) {
    if (layer == "lm_head") continue;
    const GemmShape s = LayerGemmShape(m, layer, kTokens);
    smallest = std::min(smallest, s.m * s.n * s.k);
  }
  EXPECT_EQ(PlanFp8Layers(m, r, 0, kTokens, smallest).fp8_count(), 8);
  EXPECT_LT(PlanFp8Layers(m, r, 0, kTokens, smallest + 1).fp8_count(), 8);
  EXPECT_EQ(PlanFp8Layers(m, r, 0, kTokens, kNoAutomaticFp8).fp8_count(), 0);
  r.policy.min_gemm_dim = 1;  // an explicit threshold overrides the automatic rule
  EXPECT_EQ(PlanFp8Layers(m, r, 0, kTokens, kNoAutomaticFp8).fp8_count(), 8);
}

TEST(LayerPolicyTest, Bf16WarmupStepsKeepEverythingBf16) {
  RecipeConfig r = Delayed();
  r.policy.bf16_warmup_steps = 10;
  EXPECT_EQ(PlanFp8Layers(SmallModel(), r, 0, kTokens, 0).fp8_count(), 0);
  EXPECT_EQ(PlanFp8Layers(SmallModel(), r, 9, kTokens, 0).fp8_count(), 0);
  EXPECT_EQ(PlanFp8Layers(SmallModel(), r, 10, kTokens, 0).fp8_count(), 8);
  // The plan still lists every layer during warm-up.
  EXPECT_EQ(PlanFp8Layers(SmallModel(), r, 0, kTokens, 0).layers.size(), 9u);
}

TEST(LayerPolicyTest, SkipAttentionQkLeavesQkvLayerFp8) {
  RecipeConfig r = Delayed();
  r.policy.skip_attention_qk = true;
  const LayerPlan plan = PlanFp8Layers(SmallModel(), r, 0, kTokens, 0);
  EXPECT_EQ(plan.fp8_count(), 8);
  EXPECT_TRUE(plan.fp8[0]);
  EXPECT_EQ(plan.layers[0], "layers.0.attn.qkv");
}

TEST(LayerPolicyTest, BacktrackingPatternMatchesInLinearTime) {
  // `(.*)*(.*)*!` made std::regex backtrack exponentially: the job stayed QUEUED at step 0 with
  // every job behind it. RE2 answers at once: no layer name contains `!`.
  RecipeConfig r = Delayed();
  r.policy.min_gemm_dim = 16;
  r.policy.skip_lm_head = false;
  r.policy.include = {"(.*)*(.*)*!"};
  ModelConfig big = SmallModel();
  big.n_layer = 64;
  EXPECT_TRUE(Fp8Layers(PlanFp8Layers(big, r, 0, kTokens, 0)).empty());
  r.policy.include = {"(.*)*(.*)*"};
  EXPECT_EQ(Fp8Layers(PlanFp8Layers(big, r, 0, kTokens, 0)).size(), 64u * 4 + 1);
}

}  // namespace
}  // namespace fp8d
