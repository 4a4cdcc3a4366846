// Warm-up rises linearly to the peak; cosine decay lands exactly on min_lr at the last step.
#include "core/lr_schedule.h"

#include "gtest/gtest.h"

namespace fp8d {
namespace {

TEST(LrSchedule, WarmupRisesLinearlyToPeak) {
  const LrSchedule s(1e-3f, 1e-4f, /*warmup_steps=*/4, /*total_steps=*/20);
  EXPECT_FLOAT_EQ(s.At(0), 0.25e-3f);
  EXPECT_FLOAT_EQ(s.At(1), 0.50e-3f);
  EXPECT_FLOAT_EQ(s.At(2), 0.75e-3f);
  EXPECT_FLOAT_EQ(s.At(3), 1e-3f);
}

TEST(LrSchedule, CosineStartsAtPeakAndEndsAtMinLr) {
  const LrSchedule s(1e-3f, 1e-4f, 4, 20);
  EXPECT_FLOAT_EQ(s.At(4), 1e-3f);
  EXPECT_FLOAT_EQ(s.At(19), 1e-4f);
  // Halfway through the decay (steps 4..19, midpoint 11.5) lies between 11 and 12.
  EXPECT_GT(s.At(11), 0.55e-3f);
  EXPECT_LT(s.At(12), 0.55e-3f);
}

TEST(LrSchedule, DecayIsMonotone) {
  const LrSchedule s(3e-4f, 0.f, 0, 100);
  for (int i = 1; i < 100; ++i) EXPECT_LE(s.At(i), s.At(i - 1)) << "step " << i;
  EXPECT_FLOAT_EQ(s.At(0), 3e-4f);
  EXPECT_FLOAT_EQ(s.At(99), 0.f);
}

TEST(LrSchedule, SingleStepRunsAtPeak) {
  EXPECT_FLOAT_EQ(LrSchedule(1e-3f, 1e-4f, 0, 1).At(0), 1e-3f);
}

TEST(LrSchedule, WarmupCoveringEveryStepNeverDecays) {
  const LrSchedule s(1e-3f, 1e-4f, 5, 5);
  EXPECT_FLOAT_EQ(s.At(0), 0.2e-3f);
  EXPECT_FLOAT_EQ(s.At(4), 1e-3f);
}

TEST(LrSchedule, StepsPastTheEndStayAtMinLr) {
  const LrSchedule s(1e-3f, 1e-4f, 0, 10);
  EXPECT_FLOAT_EQ(s.At(50), 1e-4f);
}

}  // namespace
}  // namespace fp8d
