// FP8 quantize-dequantize emulation: per-tensor and block-scaled, with saturation and underflow
// statistics.
#include "core/fp8_quantize.h"

#include <cmath>
#include <cstdint>
#include <limits>
#include <random>
#include <vector>

#include "core/fp8_format.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace fp8d {
namespace {

using ::testing::ElementsAre;
using ::testing::FloatEq;
using ::testing::Pointwise;

constexpr float kNaN = std::numeric_limits<float>::quiet_NaN();
constexpr float kInf = std::numeric_limits<float>::infinity();

std::vector<float> RandomNormal(int64_t n, float stddev, uint32_t seed) {
  std::mt19937 gen(seed);
  std::normal_distribution<float> dist(0.f, stddev);
  std::vector<float> v(n);
  for (float& x : v) x = dist(gen);
  return v;
}

// The documented formula, element by element.
float Reference(float x, float scale, Fp8Format format) {
  return Fp8ToFloat(FloatToFp8(x * scale, format), format) * (1.0f / scale);
}

TEST(Fp8QuantizeTest, AmaxIsLargestMagnitude) {
  const std::vector<float> x = {1.f, -7.5f, 3.f, 0.f};
  EXPECT_EQ(Amax(x), 7.5f);
  EXPECT_EQ(Amax({}), 0.f);
  EXPECT_EQ(Amax(std::vector<float>{-kInf, 1.f}), kInf);
}

TEST(Fp8QuantizeTest, AmaxPropagatesNaN) {
  EXPECT_TRUE(std::isnan(Amax(std::vector<float>{1.f, kNaN, 1000.f})));
  EXPECT_TRUE(std::isnan(Amax(std::vector<float>{kNaN})));
}

TEST(Fp8QuantizeTest, PerTensorHandCasesAndStats) {
  // scale 1, E4M3: 1.0625 rounds to even (1.0), 500 and -1000 saturate, 2^-12 underflows.
  const std::vector<float> in = {1.f, 1.0625f, 500.f, -1000.f, 0x1p-12f, 0.f, -0.25f};
  std::vector<float> out(in.size());
  const QuantStats s = QuantizeDequantize(in, absl::MakeSpan(out), Fp8Format::kE4M3, 1.f);
  EXPECT_THAT(out, ElementsAre(1.f, 1.f, 448.f, -448.f, 0.f, 0.f, -0.25f));
  EXPECT_EQ(s.amax, 1000.f);
  EXPECT_EQ(s.count, 7);
  EXPECT_EQ(s.nonzero, 6);
  EXPECT_EQ(s.saturated, 2);
  EXPECT_EQ(s.underflow, 1);
  EXPECT_FLOAT_EQ(s.frac_saturated(), 2.f / 7.f);
  EXPECT_FLOAT_EQ(s.frac_underflow(), 1.f / 6.f);
}

TEST(Fp8QuantizeTest, PerTensorScaleIsUndoneByInverse) {
  // scale 4: 100 * 4 = 400 -> 384 (E4M3 step 32 at 256..448), dequantized 384 * 0.25 = 96.
  const std::vector<float> in = {100.f, 200.f, -0x1p-11f};
  std::vector<float> out(in.size());
  const QuantStats s = QuantizeDequantize(in, absl::MakeSpan(out), Fp8Format::kE4M3, 4.f);
  EXPECT_THAT(out, ElementsAre(96.f, 112.f, -0x1p-11f));
  EXPECT_EQ(s.saturated, 1);  // 200 * 4 = 800 > 448
  EXPECT_EQ(s.underflow, 0);  // -2^-11 * 4 = -2^-9 is the smallest E4M3 subnormal
}

TEST(Fp8QuantizeTest, PerTensorE5M2UsesItsRangeAndStep) {
  const std::vector<float> in = {1.125f, 60000.f, 1e6f, 0x1p-18f};
  std::vector<float> out(in.size());
  const QuantStats s = QuantizeDequantize(in, absl::MakeSpan(out), Fp8Format::kE5M2, 1.f);
  EXPECT_THAT(out, ElementsAre(1.f, 57344.f, 57344.f, 0.f));
  EXPECT_EQ(s.saturated, 2);
  EXPECT_EQ(s.underflow, 1);
}

TEST(Fp8QuantizeTest, PerTensorMatchesFormulaOnRandomData) {
  for (Fp8Format format : {Fp8Format::kE4M3, Fp8Format::kE5M2}) {
    const std::vector<float> in = RandomNormal(10000, 3.f, 7);
    const float scale = Fp8Max(format) / Amax(in) / 2.f;
    std::vector<float> out(in.size());
    const QuantStats s = QuantizeDequantize(in, absl::MakeSpan(out), format, scale);
    int64_t underflow = 0;
    for (size_t i = 0; i < in.size(); ++i) {
      ASSERT_EQ(out[i], Reference(in[i], scale, format)) << i;
      // Relative error of round to nearest: half a step, 2^-4 for E4M3 and 2^-3 for E5M2,
      // for values in the normal range (plus a little for the rounded 1 / scale).
      const float normal_min = (format == Fp8Format::kE4M3 ? 0x1p-6f : 0x1p-14f) / scale;
      if (std::fabs(in[i]) >= normal_min) {
        const float half_step = format == Fp8Format::kE4M3 ? 0x1p-4f : 0x1p-3f;
        EXPECT_LE(std::fabs(out[i] - in[i]), std::fabs(in[i]) * half_step * 1.001f) << i;
      }
      underflow += in[i] != 0.f && out[i] == 0.f;
    }
    EXPECT_EQ(s.saturated, 0);  // a margin of 2x keeps every value in range
    EXPECT_EQ(s.underflow, underflow);
    EXPECT_EQ(s.count, 10000);
    EXPECT_EQ(s.amax, Amax(in));
  }
}

TEST(Fp8QuantizeTest, PerTensorWorksInPlace) {
  std::vector<float> data = RandomNormal(1000, 1.f, 11);
  std::vector<float> separate(data.size());
  const QuantStats a = QuantizeDequantize(data, absl::MakeSpan(separate), Fp8Format::kE4M3, 100.f);
  const QuantStats b = QuantizeDequantize(data, absl::MakeSpan(data), Fp8Format::kE4M3, 100.f);
  EXPECT_EQ(data, separate);
  EXPECT_EQ(a.saturated, b.saturated);
  EXPECT_EQ(a.amax, b.amax);
}

TEST(Fp8QuantizeTest, NaNAndInfInputs) {
  const std::vector<float> in = {kNaN, kInf, -kInf, 1.f};
  std::vector<float> out(in.size());
  const QuantStats s = QuantizeDequantize(in, absl::MakeSpan(out), Fp8Format::kE4M3, 2.f);
  EXPECT_TRUE(std::isnan(out[0]));
  EXPECT_EQ(out[1], 224.f);  // inf saturates to 448, dequantized with 1/2
  EXPECT_EQ(out[2], -224.f);
  EXPECT_EQ(out[3], 1.f);
  EXPECT_TRUE(std::isnan(s.amax));
  EXPECT_EQ(s.saturated, 2);
  EXPECT_EQ(s.nonzero, 4);
  EXPECT_EQ(s.underflow, 0);
}

TEST(Fp8QuantizeTest, StatsMergeAddsCountsAndKeepsMaxAmax) {
  QuantStats a{.amax = 2.f, .count = 10, .nonzero = 8, .saturated = 1, .underflow = 2};
  const QuantStats b{.amax = 5.f, .count = 6, .nonzero = 6, .saturated = 3, .underflow = 0};
  a.Merge(b);
  EXPECT_EQ(a.amax, 5.f);
  EXPECT_EQ(a.count, 16);
  EXPECT_EQ(a.nonzero, 14);
  EXPECT_EQ(a.saturated, 4);
  EXPECT_EQ(a.underflow, 2);
  a.Merge(QuantStats{.amax = kNaN});
  EXPECT_TRUE(std::isnan(a.amax));
  EXPECT_EQ(QuantStats{}.frac_saturated(), 0.f);
  EXPECT_EQ(QuantStats{}.frac_underflow(), 0.f);
}

TEST(Fp8QuantizeTest, RowwiseBlocksUseEachRowsAmax) {
  // Power-of-two amaxes keep fp8_max / amax exact.
  const std::vector<float> in = {1.f,  -2.f, 0.5f,   //
                                 64.f, 4.f,  -16.f,  //
                                 0.f,  0.f,  0.f};
  std::vector<float> out(in.size());
  std::vector<float> scales;
  const QuantStats s =
      QuantizeDequantizeBlocks(in.data(), out.data(), 3, 3, 1, 3, Fp8Format::kE4M3, &scales);
  EXPECT_THAT(scales, ElementsAre(224.f, 7.f, 1.f));  // all-zero row keeps scale 1
  // Every scaled value is exact in E4M3; only 1 / scale rounds.
  EXPECT_THAT(out, Pointwise(FloatEq(), in));
  EXPECT_EQ(s.amax, 64.f);
  EXPECT_EQ(s.count, 9);
  EXPECT_EQ(s.nonzero, 6);
  EXPECT_EQ(s.saturated, 0);
  EXPECT_EQ(s.underflow, 0);
}

TEST(Fp8QuantizeTest, PartialEdgeBlocksUseTheirOwnAmax) {
  // 2 x 300 with 1x128 blocks: 3 blocks per row, the last 44 columns wide.
  constexpr int kRows = 2, kCols = 300;
  std::vector<float> in = RandomNormal(kRows * kCols, 1.f, 3);
  in[1 * kCols + 299] = 50.f;  // only in row 1's edge block
  std::vector<float> out(in.size());
  std::vector<float> scales;
  QuantizeDequantizeBlocks(in.data(), out.data(), kRows, kCols, 1, 128, Fp8Format::kE4M3, &scales);
  ASSERT_EQ(scales.size(), 6u);
  for (int r = 0; r < kRows; ++r) {
    for (int b = 0; b < 3; ++b) {
      const int c0 = b * 128, width = std::min(kCols - c0, 128);
      const float amax = Amax(absl::MakeConstSpan(in.data() + r * kCols + c0, width));
      const float scale = kE4M3Max / amax;
      EXPECT_EQ(scales[r * 3 + b], scale) << r << "," << b;
      for (int c = c0; c < c0 + width; ++c) {
        ASSERT_EQ(out[r * kCols + c], Reference(in[r * kCols + c], scale, Fp8Format::kE4M3));
      }
    }
  }
  EXPECT_EQ(scales[5], kE4M3Max / 50.f);
}

TEST(Fp8QuantizeTest, SquareBlocksIndexRowMajorWithPartialEdges) {
  // 130 x 130 with 128x128 blocks: a 2 x 2 grid, the right and bottom blocks 2 wide.
  constexpr int kN = 130;
  std::vector<float> in(kN * kN, 1.f);
  in[0 * kN + 129] = 2.f;    // block (0, 1)
  in[129 * kN + 0] = 4.f;    // block (1, 0)
  in[129 * kN + 129] = 8.f;  // block (1, 1)
  std::vector<float> out(in.size());
  std::vector<float> scales;
  const QuantStats s =
      QuantizeDequantizeBlocks(in.data(), out.data(), kN, kN, 128, 128, Fp8Format::kE4M3, &scales);
  EXPECT_THAT(scales, ElementsAre(448.f, 224.f, 112.f, 56.f));
  EXPECT_THAT(out, Pointwise(FloatEq(), in));
  EXPECT_EQ(s.count, kN * kN);
  EXPECT_EQ(s.amax, 8.f);
}

TEST(Fp8QuantizeTest, AllZeroBlockKeepsScaleOneAndCountsNothing) {
  std::vector<float> in(256, 0.f);
  for (int c = 128; c < 256; ++c) in[c] = 0.5f;
  std::vector<float> out(in.size(), -1.f);
  std::vector<float> scales;
  const QuantStats s =
      QuantizeDequantizeBlocks(in.data(), out.data(), 1, 256, 1, 128, Fp8Format::kE4M3, &scales);
  EXPECT_THAT(scales, ElementsAre(1.f, 896.f));
  EXPECT_THAT(out, Pointwise(FloatEq(), in));
  EXPECT_EQ(s.nonzero, 128);
  EXPECT_EQ(s.underflow, 0);
  EXPECT_EQ(s.saturated, 0);
}

TEST(Fp8QuantizeTest, BlockUnderflowCountsValuesFlushedToZero) {
  // Amax 448 gives scale 1; 2^-12 and -2^-11 are below half the smallest subnormal (2^-10),
  // 2^-10 is exactly half and rounds to even (0), 3 * 2^-10 rounds to 2 units.
  const std::vector<float> in = {448.f, 0x1p-12f, -0x1p-11f, 0x1p-10f, 3 * 0x1p-10f, 0.f};
  std::vector<float> out(in.size());
  std::vector<float> scales;
  const QuantStats s =
      QuantizeDequantizeBlocks(in.data(), out.data(), 1, 6, 1, 128, Fp8Format::kE4M3, &scales);
  EXPECT_THAT(scales, ElementsAre(1.f));
  EXPECT_THAT(out, ElementsAre(448.f, 0.f, -0.f, 0.f, 0x1p-8f, 0.f));
  EXPECT_EQ(s.underflow, 3);
  EXPECT_EQ(s.nonzero, 5);
  EXPECT_FLOAT_EQ(s.frac_underflow(), 3.f / 5.f);
}

TEST(Fp8QuantizeTest, BlockSaturationCountsValuesAboveFp8Max) {
  // A block holding inf has no usable amax: scale stays 1 and the large values saturate.
  const std::vector<float> in = {kInf, 1000.f, -500.f, 3.f};
  std::vector<float> out(in.size());
  std::vector<float> scales;
  const QuantStats s =
      QuantizeDequantizeBlocks(in.data(), out.data(), 1, 4, 1, 4, Fp8Format::kE4M3, &scales);
  EXPECT_THAT(scales, ElementsAre(1.f));
  EXPECT_THAT(out, ElementsAre(448.f, 448.f, -448.f, 3.f));
  EXPECT_EQ(s.saturated, 3);
  EXPECT_FLOAT_EQ(s.frac_saturated(), 3.f / 4.f);
}

TEST(Fp8QuantizeTest, TinyBlockAmaxUsesLargestFiniteScale) {
  const float tiny = std::numeric_limits<float>::denorm_min();
  const std::vector<float> in = {tiny, 0.f};
  std::vector<float> out(in.size());
  std::vector<float> scales;
  QuantizeDequantizeBlocks(in.data(), out.data(), 1, 2, 1, 2, Fp8Format::kE4M3, &scales);
  EXPECT_THAT(scales, ElementsAre(std::numeric_limits<float>::max()));
  EXPECT_TRUE(std::isfinite(out[0]));
}

TEST(Fp8QuantizeTest, RowwiseBlocksEqualPerTensorQuantizationOfEachRow) {
  constexpr int kRows = 8, kCols = 200;
  for (Fp8Format format : {Fp8Format::kE4M3, Fp8Format::kE5M2}) {
    const std::vector<float> in = RandomNormal(kRows * kCols, 0.02f, 5);
    std::vector<float> out(in.size());
    std::vector<float> scales;
    const QuantStats blocks =
        QuantizeDequantizeBlocks(in.data(), out.data(), kRows, kCols, 1, kCols, format, &scales);
    ASSERT_EQ(scales.size(), static_cast<size_t>(kRows));
    QuantStats rows;
    for (int r = 0; r < kRows; ++r) {
      const auto row = absl::MakeConstSpan(in.data() + r * kCols, kCols);
      std::vector<float> expected(kCols);
      rows.Merge(
          QuantizeDequantize(row, absl::MakeSpan(expected), format, Fp8Max(format) / Amax(row)));
      EXPECT_EQ(std::vector<float>(out.begin() + r * kCols, out.begin() + (r + 1) * kCols),
                expected)
          << "row " << r;
    }
    EXPECT_EQ(blocks.amax, rows.amax);
    EXPECT_EQ(blocks.count, rows.count);
    EXPECT_EQ(blocks.saturated, rows.saturated);
    EXPECT_EQ(blocks.underflow, rows.underflow);
  }
}

TEST(Fp8QuantizeTest, BlocksWorkInPlace) {
  std::vector<float> data = RandomNormal(3 * 256, 1.f, 9);
  std::vector<float> separate(data.size());
  std::vector<float> s1, s2;
  QuantizeDequantizeBlocks(data.data(), separate.data(), 3, 256, 1, 128, Fp8Format::kE4M3, &s1);
  QuantizeDequantizeBlocks(data.data(), data.data(), 3, 256, 1, 128, Fp8Format::kE4M3, &s2);
  EXPECT_EQ(data, separate);
  EXPECT_EQ(s1, s2);
}

}  // namespace
}  // namespace fp8d
