// BF16 <-> FP32 conversion kernels against the host conversions of cuda_bf16.h, including
// values that round across a binade, overflow to infinity, are subnormal, infinite or NaN.
#include <cmath>
#include <cstring>
#include <limits>
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "kernels/convert.cuh"
#include "tests/gpu/gpu_test_util.h"

namespace fp8d {
namespace {

using testing::DeviceBuffer;
using testing::RandomNormal;
using testing::SameBytes;

class GpuConvertTest : public testing::GpuTest<int64_t> {
 protected:
  int64_t n() const { return GetParam(); }
  std::vector<float> Inputs() const {
    std::vector<float> x = RandomNormal(n(), 1, 10.f, /*bf16_exact=*/false);
    const float specials[] = {0.f,
                              -0.f,
                              1.00390625f,  // halfway between two BF16 values: ties to even
                              3.4e38f,        // over BF16 max + half a step: rounds to inf
                              1e-40f,         // subnormal
                              std::numeric_limits<float>::infinity(),
                              -std::numeric_limits<float>::infinity()};
    for (size_t i = 0; i < sizeof(specials) / sizeof(specials[0]) && i < x.size(); ++i) {
      x[i] = specials[i];
    }
    return x;
  }
};

TEST_P(GpuConvertTest, FloatToBf16RoundsToNearestEven) {
  const std::vector<float> x = Inputs();
  DeviceBuffer<float> d_x(x);
  DeviceBuffer<__nv_bfloat16> d_y(n());
  kernels::FloatToBf16(nullptr, d_y.get(), d_x.get(), n());
  EXPECT_TRUE(SameBytes(d_y.Download(), testing::ToBf16(x)));
}

TEST_P(GpuConvertTest, Bf16ToFloatIsExact) {
  const std::vector<__nv_bfloat16> x = testing::ToBf16(Inputs());
  DeviceBuffer<__nv_bfloat16> d_x(x);
  DeviceBuffer<float> d_y(n());
  kernels::Bf16ToFloat(nullptr, d_y.get(), d_x.get(), n());
  EXPECT_TRUE(SameBytes(d_y.Download(), testing::ToFloat(x)));
}

class GpuConvertSpecialsTest : public testing::GpuTest<> {};

TEST_F(GpuConvertSpecialsTest, NanStaysNan) {
  DeviceBuffer<float> d_x(std::vector<float>{std::nanf("")});
  DeviceBuffer<__nv_bfloat16> d_y(1);
  DeviceBuffer<float> d_back(1);
  kernels::FloatToBf16(nullptr, d_y.get(), d_x.get(), 1);
  kernels::Bf16ToFloat(nullptr, d_back.get(), d_y.get(), 1);
  EXPECT_TRUE(std::isnan(d_back.Download()[0]));
}

INSTANTIATE_TEST_SUITE_P(Sizes, GpuConvertTest, ::testing::Values(7, 256, 1000003),
                         [](const ::testing::TestParamInfo<int64_t>& info) {
                           return "n" + std::to_string(info.param);
                         });

}  // namespace
}  // namespace fp8d
