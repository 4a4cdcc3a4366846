// The GPU memory plan: sizes from the model and batch shape, and the fit check that turns a job
// too large for the GPU into RESOURCE_EXHAUSTED with the numbers. Needs no GPU.
#include "kernels/memory_plan.h"

#include "absl/strings/match.h"
#include "core/model_config.h"
#include "gtest/gtest.h"

namespace fp8d::kernels {
namespace {

ModelConfig Preset(const char* name) {
  fp8d::v1::ModelConfig p;
  p.set_preset(name);
  return *ResolveModelConfig(p);
}

TEST(MemoryPlanTest, ParametersGradientsAndMomentsScaleWithParamCount) {
  const ModelConfig m = Preset("124m");
  const MemoryPlan plan = PlanTrainingMemory(m, {16, 1024}, 0, 0);
  const size_t n = static_cast<size_t>(m.ParamCount());
  EXPECT_EQ(plan.CategoryBytes(MemoryCategory::kParameters), n * (4 + 2));
  EXPECT_EQ(plan.CategoryBytes(MemoryCategory::kGradients), n * 4);
  EXPECT_EQ(plan.CategoryBytes(MemoryCategory::kOptimizer), n * 8);
}

TEST(MemoryPlanTest, ActivationsGrowWithTheBatch) {
  const ModelConfig m = Preset("124m");
  const MemoryPlan small = PlanTrainingMemory(m, {4, 1024}, 0, 0);
  const MemoryPlan large = PlanTrainingMemory(m, {16, 1024}, 0, 0);
  EXPECT_GT(large.CategoryBytes(MemoryCategory::kActivations),
            3 * small.CategoryBytes(MemoryCategory::kActivations));
  EXPECT_EQ(large.CategoryBytes(MemoryCategory::kParameters),
            small.CategoryBytes(MemoryCategory::kParameters));
}

TEST(MemoryPlanTest, RegionsAreAlignedAndDisjoint) {
  const MemoryPlan plan = PlanTrainingMemory(Preset("tiny"), {2, 64}, 1000, 777);
  size_t end = 0;
  for (const MemoryRegion& r : plan.regions()) {
    EXPECT_EQ(r.offset % kRegionAlignment, 0u) << r.name;
    EXPECT_GE(r.offset, end) << r.name;
    end = r.offset + r.bytes;
  }
  EXPECT_EQ(plan.slab_bytes(), end);
  EXPECT_EQ(plan.Estimate(), static_cast<int64_t>(end) + kRuntimeReserveBytes);
}

TEST(MemoryPlanTest, TooLargeForFreeMemoryIsResourceExhaustedWithTheNumbers) {
  const MemoryPlan plan = PlanTrainingMemory(Preset("1b"), {8, 2048}, 0, 0);
  const int64_t free_bytes = int64_t{8} << 30;
  const absl::Status s = CheckFits(plan, free_bytes, int64_t{80} << 30);
  EXPECT_EQ(s.code(), absl::StatusCode::kResourceExhausted);
  EXPECT_TRUE(absl::StrContains(s.message(), "8.00 GiB")) << s.message();
  EXPECT_TRUE(absl::StrContains(s.message(), "80.00 GiB")) << s.message();
  EXPECT_TRUE(absl::StrContains(s.message(), "parameters")) << s.message();
  EXPECT_TRUE(CheckFits(plan, plan.Estimate(), plan.Estimate()).ok());
}

TEST(MemoryPlanTest, LmHeadChunkBoundsTheLogits) {
  const ModelConfig m = Preset("1b");
  const int64_t rows = LmHeadChunkRows(m, {8, 2048});
  EXPECT_LE(rows * m.vocab_size * 2, int64_t{512} << 20);
  EXPECT_EQ(rows % 128, 0);
  EXPECT_EQ(LmHeadChunkRows(Preset("tiny"), {2, 16}), 32);
}

}  // namespace
}  // namespace fp8d::kernels
