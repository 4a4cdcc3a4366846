// Residual add and in-place scaling: each output is one FP32 operation rounded once, so the
// host computes the exact expected bytes.
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "kernels/residual.cuh"
#include "tests/gpu/gpu_test_util.h"

namespace fp8d {
namespace {

using testing::DeviceBuffer;
using testing::RandomNormal;
using testing::RoundToBf16;
using testing::SameBytes;
using testing::ToBf16;
using testing::ToFloat;

class GpuResidualTest : public testing::GpuTest<int64_t> {
 protected:
  int64_t n() const { return GetParam(); }
};

TEST_P(GpuResidualTest, AddIsFp32SumRoundedToBf16) {
  const std::vector<float> a = RandomNormal(n(), 1), b = RandomNormal(n(), 2, 0.01f);
  std::vector<float> want(n());
  for (int64_t i = 0; i < n(); ++i) want[i] = RoundToBf16(a[i] + b[i]);
  DeviceBuffer<__nv_bfloat16> d_a(ToBf16(a)), d_b(ToBf16(b)), d_out(n());
  kernels::ResidualAdd(nullptr, d_out.get(), d_a.get(), d_b.get(), n());
  EXPECT_TRUE(SameBytes(ToFloat(d_out.Download()), want));
  // In place into the residual stream.
  kernels::ResidualAdd(nullptr, d_a.get(), d_a.get(), d_b.get(), n());
  EXPECT_TRUE(SameBytes(ToFloat(d_a.Download()), want));
}

TEST_P(GpuResidualTest, ScaleInPlaceMultipliesEveryElement) {
  const std::vector<float> x = RandomNormal(n(), 3, 1.f, false);
  std::vector<float> want(n());
  for (int64_t i = 0; i < n(); ++i) want[i] = x[i] * 0.25f;
  DeviceBuffer<float> d_x(x);
  kernels::ScaleInPlace(nullptr, d_x.get(), 0.25f, n());
  EXPECT_TRUE(SameBytes(d_x.Download(), want));
}

INSTANTIATE_TEST_SUITE_P(Sizes, GpuResidualTest, ::testing::Values(1, 255, 257, 1000003),
                         [](const ::testing::TestParamInfo<int64_t>& info) {
                           return "n" + std::to_string(info.param);
                         });

}  // namespace
}  // namespace fp8d
