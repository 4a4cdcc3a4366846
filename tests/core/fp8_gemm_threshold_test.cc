// The automatic FP8 size rule: what the measured table answers, how the planner applies it (by
// GEMM volume, per layer), that an explicit policy overrides it, and that both the CPU engine and
// the 124m / 1b presets plan as the measurement says.
#include "core/fp8_gemm_threshold.h"

#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "core/cpu_engine.h"
#include "core/layer_policy.h"
#include "core/model_config.h"
#include "core/model_weights.h"
#include "fp8d/v1/job.pb.h"
#include "gtest/gtest.h"

namespace fp8d {
namespace {

RecipeConfig Recipe(RecipeKind kind) {
  RecipeConfig r;
  r.kind = kind;
  return r;
}

ModelConfig Preset(const std::string& name) {
  fp8d::v1::ModelConfig proto;
  proto.set_preset(name);
  absl::StatusOr<ModelConfig> m = ResolveModelConfig(proto);
  EXPECT_TRUE(m.ok()) << m.status();
  return *m;
}

// FP8 layer names of a plan, without the "model.layers.N." prefix repetition checks.
std::vector<std::string> Fp8Layers(const LayerPlan& plan) {
  std::vector<std::string> out;
  for (size_t i = 0; i < plan.layers.size(); ++i) {
    if (plan.fp8[i]) out.push_back(plan.layers[i]);
  }
  return out;
}

TEST(Fp8GemmThresholdTest, Bf16AndMxfp8HaveNoThreshold) {
  EXPECT_EQ(AutoMinGemmVolume(RecipeKind::kBf16), 0);
  EXPECT_EQ(AutoMinGemmVolume(RecipeKind::kMxfp8), 0);
}

TEST(Fp8GemmThresholdTest, MeasuredVolumes) {
  // tests/bench/RESULTS.md, fp8d-gemm-bench --linear-sweep on the H100, 2026-11-22.
  EXPECT_EQ(AutoMinGemmVolume(RecipeKind::kDelayed), int64_t{1} << 35);
  EXPECT_EQ(AutoMinGemmVolume(RecipeKind::kCurrent), int64_t{9} << 33);
  EXPECT_EQ(AutoMinGemmVolume(RecipeKind::kRowwise), kNoAutomaticFp8);
  EXPECT_EQ(AutoMinGemmVolume(RecipeKind::kBlockwise), kNoAutomaticFp8);
}

// What the rule means for the benchmark presets at their benchmark shapes: the 1b model's layers
// all run FP8 under delayed (its output projection, 16384 x 2048 x 2048, is the one current
// scaling leaves BF16); the 124m model keeps only its MLP-up projection FP8 under delayed.
TEST(Fp8GemmThresholdTest, PresetsPlanAsMeasured) {
  const ModelConfig b1 = Preset("1b"), m124 = Preset("124m");
  const int64_t t1b = 8 * 2048, t124m = 16 * 1024;
  const LayerPlan delayed_1b = PlanFp8Layers(b1, Recipe(RecipeKind::kDelayed), 0, t1b,
                                             AutoMinGemmVolume(RecipeKind::kDelayed));
  EXPECT_EQ(delayed_1b.fp8_count(), 4 * b1.n_layer);
  const LayerPlan current_1b = PlanFp8Layers(b1, Recipe(RecipeKind::kCurrent), 0, t1b,
                                             AutoMinGemmVolume(RecipeKind::kCurrent));
  EXPECT_EQ(current_1b.fp8_count(), 3 * b1.n_layer);
  for (const std::string& name : Fp8Layers(current_1b)) {
    EXPECT_EQ(name.find("attn.out"), std::string::npos) << name;
  }
  const LayerPlan delayed_124m = PlanFp8Layers(m124, Recipe(RecipeKind::kDelayed), 0, t124m,
                                               AutoMinGemmVolume(RecipeKind::kDelayed));
  EXPECT_EQ(delayed_124m.fp8_count(), m124.n_layer);
  for (const std::string& name : Fp8Layers(delayed_124m)) {
    EXPECT_NE(name.find("mlp.gate_up"), std::string::npos) << name;
  }
  for (RecipeKind kind : {RecipeKind::kRowwise, RecipeKind::kBlockwise}) {
    EXPECT_EQ(PlanFp8Layers(b1, Recipe(kind), 0, t1b, AutoMinGemmVolume(kind)).fp8_count(), 0)
        << RecipeKindName(kind);
  }
}

TEST(Fp8GemmThresholdTest, ExplicitMinGemmDimOverridesTheAutomaticRule) {
  const ModelConfig b1 = Preset("1b");
  for (RecipeKind kind : {RecipeKind::kDelayed, RecipeKind::kCurrent, RecipeKind::kRowwise,
                          RecipeKind::kBlockwise}) {
    RecipeConfig r = Recipe(kind);
    r.policy.min_gemm_dim = 16;  // every layer
    EXPECT_EQ(PlanFp8Layers(b1, r, 0, 16, AutoMinGemmVolume(kind)).fp8_count(), 4 * b1.n_layer)
        << RecipeKindName(kind);
  }
}

// The CPU engine plans with the same rule: under delayed the tiny preset is far below the
// measured volume and stays BF16, unless the policy asks for FP8.
TEST(Fp8GemmThresholdTest, CpuEnginePlansWithTheMeasuredRule) {
  const ModelConfig tiny = Preset("tiny");
  RecipeConfig r = Recipe(RecipeKind::kDelayed);
  absl::StatusOr<std::unique_ptr<CpuEngine>> engine = CpuEngine::Create(tiny, r, 1);
  ASSERT_TRUE(engine.ok()) << engine.status();
  EXPECT_EQ((*engine)->PlanLayers(0).fp8_count(), 0);
  r.policy.min_gemm_dim = 16;
  engine = CpuEngine::Create(tiny, r, 1);
  ASSERT_TRUE(engine.ok()) << engine.status();
  EXPECT_EQ((*engine)->PlanLayers(0).fp8_count(), 4 * tiny.n_layer);
}

}  // namespace
}  // namespace fp8d
