// The automatic minimum GEMM size for FP8 layers: what the measured table answers, how the planner
// applies it, that an explicit policy overrides it, and that the CPU engine plans with it. The
// tests hold for any value the sweep fills in (tests/bench/RESULTS.md).
#include "core/fp8_gemm_threshold.h"

#include <algorithm>
#include <memory>

#include "absl/status/statusor.h"
#include "core/cpu_engine.h"
#include "core/layer_policy.h"
#include "core/model_config.h"
#include "fp8d/v1/job.pb.h"
#include "gtest/gtest.h"

namespace fp8d {
namespace {

// The recipes the sweep measures (blockwise as its 1x128 scaling).
constexpr RecipeKind kMeasuredKinds[] = {RecipeKind::kDelayed, RecipeKind::kCurrent,
                                         RecipeKind::kRowwise, RecipeKind::kBlockwise};
// The GPU's FP8 GEMMs need every dimension to be a multiple of this.
constexpr int kFp8DimMultiple = 16;
// GEMM layers per decoder layer (qkv, out, gate_up, down); the LM head is skipped by default.
constexpr int kGemmsPerLayer = 4;

// Two layers whose every weight dimension is at least `min_dim` (and a multiple of 64), so the
// tokens per micro-batch decide whether min(m, n, k) reaches a threshold of `min_dim`.
ModelConfig ModelAtLeast(int min_dim) {
  ModelConfig m;
  m.n_layer = 2;
  m.d_model = std::max(64, (min_dim + 63) / 64 * 64);
  m.n_head = 4;
  m.n_kv_head = 2;
  m.d_ff = 3 * m.d_model;
  m.vocab_size = 256;
  m.max_seq_len = 128;
  return m;
}

RecipeConfig Recipe(RecipeKind kind) {
  RecipeConfig r;
  r.kind = kind;
  return r;
}

TEST(Fp8GemmThresholdTest, Bf16AndMxfp8HaveNoThreshold) {
  EXPECT_EQ(AutoMinGemmDim(RecipeKind::kBf16), 0);
  EXPECT_EQ(AutoMinGemmDim(RecipeKind::kMxfp8), 0);
}

TEST(Fp8GemmThresholdTest, EveryMeasuredValueIsZeroOrASizeOfTheSweepGrid) {
  for (RecipeKind kind : kMeasuredKinds) {
    const int t = AutoMinGemmDim(kind);
    const bool in_grid =
        std::find(kMinGemmDimGrid.begin(), kMinGemmDimGrid.end(), t) != kMinGemmDimGrid.end();
    EXPECT_TRUE(t == 0 || in_grid) << RecipeKindName(kind) << " threshold " << t;
  }
}

TEST(Fp8GemmThresholdTest, PlannerKeepsLayersBf16BelowTheThresholdAndFp8AtIt) {
  for (RecipeKind kind : kMeasuredKinds) {
    SCOPED_TRACE(RecipeKindName(kind));
    const int t = AutoMinGemmDim(kind);
    const ModelConfig model = ModelAtLeast(t);
    const int all = kGemmsPerLayer * model.n_layer;
    // At the threshold (or the smallest FP8 size when there is none) every layer qualifies.
    const int at = std::max(t, kFp8DimMultiple);
    EXPECT_EQ(PlanFp8Layers(model, Recipe(kind), 0, at, t).fp8_count(), all);
    // One FP8 size step below it, none does.
    if (t > kFp8DimMultiple) {
      EXPECT_EQ(PlanFp8Layers(model, Recipe(kind), 0, t - kFp8DimMultiple, t).fp8_count(), 0);
    }
  }
}

TEST(Fp8GemmThresholdTest, ExplicitMinGemmDimOverridesTheThreshold) {
  for (RecipeKind kind : kMeasuredKinds) {
    SCOPED_TRACE(RecipeKindName(kind));
    const int t = AutoMinGemmDim(kind);
    const ModelConfig model = ModelAtLeast(t);
    const int all = kGemmsPerLayer * model.n_layer;
    RecipeConfig r = Recipe(kind);
    // Asking for every layer: the smallest micro-batch runs FP8 whatever was measured.
    r.policy.min_gemm_dim = kFp8DimMultiple;
    EXPECT_EQ(PlanFp8Layers(model, r, 0, kFp8DimMultiple, t).fp8_count(), all);
    // Asking for more than was measured: layers at the threshold stay BF16.
    r.policy.min_gemm_dim = std::max(t, kFp8DimMultiple) + kFp8DimMultiple;
    EXPECT_EQ(PlanFp8Layers(model, r, 0, std::max(t, kFp8DimMultiple), t).fp8_count(), 0);
  }
}

// The tiny preset trains in micro-batches of its max_seq_len tokens until the first step says
// otherwise; its d_model (64) is the smallest dimension of every layer.
TEST(Fp8GemmThresholdTest, CpuEnginePlansWithTheMeasuredThreshold) {
  fp8d::v1::ModelConfig proto;
  proto.set_preset("tiny");
  absl::StatusOr<ModelConfig> model = ResolveModelConfig(proto);
  ASSERT_TRUE(model.ok()) << model.status();
  for (RecipeKind kind : kMeasuredKinds) {
    SCOPED_TRACE(RecipeKindName(kind));
    const RecipeConfig r = Recipe(kind);
    absl::StatusOr<std::unique_ptr<CpuEngine>> engine = CpuEngine::Create(*model, r, 1);
    ASSERT_TRUE(engine.ok()) << engine.status();
    const int t = AutoMinGemmDim(kind);
    const int64_t m = model->max_seq_len;
    const int smallest = static_cast<int>(std::min<int64_t>(model->d_model, m));
    const int expected = smallest >= t ? kGemmsPerLayer * model->n_layer : 0;
    EXPECT_EQ((*engine)->PlanLayers(0).fp8_count(), expected) << "threshold " << t;
    EXPECT_EQ((*engine)->PlanLayers(0).fp8, PlanFp8Layers(*model, r, 0, m, t).fp8);
  }
}

}  // namespace
}  // namespace fp8d
