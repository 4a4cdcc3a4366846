// SwiGLU kernels against core/ref/swiglu.h on BF16-rounded inputs.
#include <string>
#include <vector>

#include "core/ref/swiglu.h"
#include "gtest/gtest.h"
#include "kernels/swiglu.cuh"
#include "tests/gpu/gpu_test_util.h"

namespace fp8d {
namespace {

using testing::Bf16Close;
using testing::DeviceBuffer;
using testing::RandomNormal;
using testing::ToBf16;
using testing::ToFloat;

struct SwiGluShape {
  int rows;
  int d_ff;
};

class GpuSwiGluTest : public testing::GpuTest<SwiGluShape> {
 protected:
  int rows() const { return GetParam().rows; }
  int d_ff() const { return GetParam().d_ff; }
  size_t h_numel() const { return static_cast<size_t>(rows()) * d_ff(); }
};

TEST_P(GpuSwiGluTest, ForwardMatchesReference) {
  // Spread 3 reaches both saturated ends of the sigmoid.
  const std::vector<float> gu = RandomNormal(2 * h_numel(), 1, 3.f);
  std::vector<float> h_ref(h_numel());
  ref::SwiGluForward(gu.data(), h_ref.data(), rows(), d_ff());

  DeviceBuffer<__nv_bfloat16> d_gu(ToBf16(gu)), d_h(h_numel());
  kernels::SwiGluForward(nullptr, d_h.get(), d_gu.get(), rows(), d_ff());
  EXPECT_TRUE(Bf16Close(ToFloat(d_h.Download()), h_ref));
}

TEST_P(GpuSwiGluTest, BackwardMatchesReference) {
  const std::vector<float> gu = RandomNormal(2 * h_numel(), 2, 3.f);
  const std::vector<float> dh = RandomNormal(h_numel(), 3);
  std::vector<float> dgu_ref(2 * h_numel());
  ref::SwiGluBackward(dh.data(), gu.data(), dgu_ref.data(), rows(), d_ff());

  DeviceBuffer<__nv_bfloat16> d_gu(ToBf16(gu)), d_dh(ToBf16(dh)), d_dgu(2 * h_numel());
  kernels::SwiGluBackward(nullptr, d_dgu.get(), d_dh.get(), d_gu.get(), rows(), d_ff());
  EXPECT_TRUE(Bf16Close(ToFloat(d_dgu.Download()), dgu_ref));
}

TEST_P(GpuSwiGluTest, BackwardInPlaceOverGateUpMatchesReference) {
  const std::vector<float> gu = RandomNormal(2 * h_numel(), 4, 3.f);
  const std::vector<float> dh = RandomNormal(h_numel(), 5);
  std::vector<float> dgu_ref(2 * h_numel());
  ref::SwiGluBackward(dh.data(), gu.data(), dgu_ref.data(), rows(), d_ff());

  DeviceBuffer<__nv_bfloat16> d_gu(ToBf16(gu)), d_dh(ToBf16(dh));
  kernels::SwiGluBackward(nullptr, d_gu.get(), d_dh.get(), d_gu.get(), rows(), d_ff());
  EXPECT_TRUE(Bf16Close(ToFloat(d_gu.Download()), dgu_ref));
}

INSTANTIATE_TEST_SUITE_P(Shapes, GpuSwiGluTest,
                         ::testing::Values(SwiGluShape{1, 1}, SwiGluShape{3, 100},
                                           SwiGluShape{64, 257}, SwiGluShape{130, 1024},
                                           SwiGluShape{1000, 771}),
                         [](const ::testing::TestParamInfo<SwiGluShape>& info) {
                           return std::to_string(info.param.rows) + "x" +
                                  std::to_string(info.param.d_ff);
                         });

}  // namespace
}  // namespace fp8d
