// Delayed-scaling math: ComputeScale's FP32 result and fallbacks, and the amax history window.
#include "core/fp8_scaling.h"

#include <cmath>
#include <limits>
#include <vector>

#include "core/fp8_format.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace fp8d {
namespace {

using ::testing::ElementsAre;

constexpr float kInf = std::numeric_limits<float>::infinity();
constexpr float kNaN = std::numeric_limits<float>::quiet_NaN();
constexpr float kPrevious = 3.5f;

TEST(Fp8ScalingTest, ScaleMapsAmaxOntoFp8Max) {
  EXPECT_EQ(ComputeScale(2.f, kE4M3Max, 0, kPrevious), 224.f);
  EXPECT_EQ(ComputeScale(448.f, kE4M3Max, 0, kPrevious), 1.f);
  EXPECT_EQ(ComputeScale(0.5f, kE5M2Max, 0, kPrevious), 114688.f);
}

TEST(Fp8ScalingTest, MarginDividesByPowerOfTwo) {
  EXPECT_EQ(ComputeScale(2.f, kE4M3Max, 1, kPrevious), 112.f);
  EXPECT_EQ(ComputeScale(2.f, kE4M3Max, 3, kPrevious), 28.f);
  EXPECT_EQ(ComputeScale(448.f, kE4M3Max, 32, kPrevious), 0x1p-32f);
}

TEST(Fp8ScalingTest, ScaleIsComputedInFp32InTheDocumentedOrder) {
  // Amaxes whose quotient is inexact: the result must be the FP32 quotient, rounded once, then
  // divided by 2^margin (exact), not a double-precision value rounded at the end.
  for (float amax : {0.3f, 1.7f, 3.14159f, 1e-3f, 12345.678f, 7e-20f}) {
    for (int margin : {0, 1, 5}) {
      const volatile float quotient = kE4M3Max / amax;
      const float expected = quotient / std::ldexp(1.f, margin);
      EXPECT_EQ(ComputeScale(amax, kE4M3Max, margin, kPrevious), expected)
          << "amax " << amax << " margin " << margin;
    }
  }
}

TEST(Fp8ScalingTest, ZeroNaNAndInfAmaxKeepPreviousScale) {
  EXPECT_EQ(ComputeScale(0.f, kE4M3Max, 0, kPrevious), kPrevious);
  EXPECT_EQ(ComputeScale(-0.f, kE4M3Max, 0, kPrevious), kPrevious);
  EXPECT_EQ(ComputeScale(kNaN, kE4M3Max, 0, kPrevious), kPrevious);
  EXPECT_EQ(ComputeScale(kInf, kE4M3Max, 0, kPrevious), kPrevious);
  EXPECT_EQ(ComputeScale(-kInf, kE4M3Max, 0, kPrevious), kPrevious);
}

TEST(Fp8ScalingTest, NonFiniteResultKeepsPreviousScale) {
  // A subnormal amax overflows fp8_max / amax to inf in FP32.
  const float tiny = std::numeric_limits<float>::denorm_min();
  ASSERT_TRUE(std::isinf(kE4M3Max / tiny));
  EXPECT_EQ(ComputeScale(tiny, kE4M3Max, 0, kPrevious), kPrevious);
  EXPECT_EQ(ComputeScale(tiny, kE5M2Max, 8, kPrevious), kPrevious);
  // Even the smallest normal float overflows; 1e-30 does not.
  EXPECT_EQ(ComputeScale(std::numeric_limits<float>::min(), kE4M3Max, 0, kPrevious), kPrevious);
  EXPECT_EQ(ComputeScale(1e-30f, kE4M3Max, 0, kPrevious), kE4M3Max / 1e-30f);
}

TEST(Fp8ScalingTest, HistoryStartsAtZerosAndReducesToZero) {
  AmaxHistory h(4, AmaxAlgo::kMax);
  EXPECT_EQ(h.len(), 4);
  EXPECT_THAT(h.window(), ElementsAre(0.f, 0.f, 0.f, 0.f));
  EXPECT_EQ(h.Reduced(), 0.f);
  // So the first step's scale is the previous (initial) one.
  EXPECT_EQ(ComputeScale(h.Reduced(), kE4M3Max, 0, 1.f), 1.f);
}

TEST(Fp8ScalingTest, HistoryPushKeepsNewestFirstAndDropsOldest) {
  AmaxHistory h(3, AmaxAlgo::kMax);
  h.Push(1.f);
  h.Push(2.f);
  EXPECT_THAT(h.window(), ElementsAre(2.f, 1.f, 0.f));
  h.Push(3.f);
  h.Push(4.f);
  EXPECT_THAT(h.window(), ElementsAre(4.f, 3.f, 2.f));
}

TEST(Fp8ScalingTest, HistoryMaxIsMaxOverWindowOnly) {
  AmaxHistory h(3, AmaxAlgo::kMax);
  h.Push(10.f);
  h.Push(1.f);
  h.Push(2.f);
  EXPECT_EQ(h.Reduced(), 10.f);
  h.Push(3.f);  // 10 leaves the window
  EXPECT_EQ(h.Reduced(), 3.f);
  EXPECT_EQ(h.algo(), AmaxAlgo::kMax);
}

TEST(Fp8ScalingTest, HistoryMostRecentIsNewestEntry) {
  AmaxHistory h(3, AmaxAlgo::kMostRecent);
  h.Push(10.f);
  h.Push(1.f);
  EXPECT_EQ(h.Reduced(), 1.f);
  EXPECT_EQ(h.algo(), AmaxAlgo::kMostRecent);
}

TEST(Fp8ScalingTest, HistoryOfLengthOneTracksLastAmax) {
  AmaxHistory h(1, AmaxAlgo::kMax);
  h.Push(5.f);
  h.Push(2.f);
  EXPECT_THAT(h.window(), ElementsAre(2.f));
  EXPECT_EQ(h.Reduced(), 2.f);
}

TEST(Fp8ScalingTest, HistoryMaxSkipsNaNButNotInf) {
  AmaxHistory h(3, AmaxAlgo::kMax);
  h.Push(2.f);
  h.Push(kNaN);
  EXPECT_EQ(h.Reduced(), 2.f);
  h.Push(kInf);
  EXPECT_EQ(h.Reduced(), kInf);
  // An inf in the window keeps the previous scale until it ages out.
  EXPECT_EQ(ComputeScale(h.Reduced(), kE4M3Max, 0, kPrevious), kPrevious);
  h.Push(1.f);
  h.Push(1.f);
  h.Push(1.f);
  EXPECT_EQ(ComputeScale(h.Reduced(), kE4M3Max, 0, kPrevious), 448.f);
}

TEST(Fp8ScalingTest, HistoryMostRecentNaNKeepsPreviousScale) {
  AmaxHistory h(2, AmaxAlgo::kMostRecent);
  h.Push(2.f);
  h.Push(kNaN);
  EXPECT_TRUE(std::isnan(h.Reduced()));
  EXPECT_EQ(ComputeScale(h.Reduced(), kE4M3Max, 0, kPrevious), kPrevious);
}

TEST(Fp8ScalingTest, HistoryResetZeroesWindow) {
  AmaxHistory h(2, AmaxAlgo::kMax);
  h.Push(7.f);
  h.Reset();
  EXPECT_THAT(h.window(), ElementsAre(0.f, 0.f));
  EXPECT_EQ(h.Reduced(), 0.f);
}

TEST(Fp8ScalingTest, HistorySetWindowResizesToLength) {
  AmaxHistory h(3, AmaxAlgo::kMax);
  h.set_window({5.f, 6.f});
  EXPECT_THAT(h.window(), ElementsAre(5.f, 6.f, 0.f));
  h.set_window({1.f, 2.f, 3.f, 4.f});
  EXPECT_THAT(h.window(), ElementsAre(1.f, 2.f, 3.f));
  EXPECT_EQ(h.Reduced(), 3.f);
  h.Push(9.f);
  EXPECT_THAT(h.window(), ElementsAre(9.f, 1.f, 2.f));
}

TEST(Fp8ScalingTest, EmptyHistoryReducesToZero) {
  AmaxHistory h(0, AmaxAlgo::kMostRecent);
  h.Push(3.f);
  EXPECT_EQ(h.len(), 0);
  EXPECT_EQ(h.Reduced(), 0.f);
}

}  // namespace
}  // namespace fp8d
