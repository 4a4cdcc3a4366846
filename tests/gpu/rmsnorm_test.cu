// RMSNorm kernels against core/ref/rmsnorm.h on BF16-rounded inputs.
#include <cstdint>
#include <string>
#include <vector>

#include "core/ref/rmsnorm.h"
#include "gtest/gtest.h"
#include "kernels/rmsnorm.cuh"
#include "tests/gpu/gpu_test_util.h"

namespace fp8d {
namespace {

using testing::Bf16Close;
using testing::DeviceBuffer;
using testing::Fp32Close;
using testing::RandomNormal;
using testing::ToBf16;
using testing::ToFloat;

constexpr float kEps = 1e-5f;

struct RmsNormShape {
  int rows;
  int channels;
};

class GpuRmsNormTest : public testing::GpuTest<RmsNormShape> {
 protected:
  int rows() const { return GetParam().rows; }
  int channels() const { return GetParam().channels; }
  size_t numel() const { return static_cast<size_t>(rows()) * channels(); }
  std::vector<float> Gains(uint64_t seed) const {
    std::vector<float> w = RandomNormal(channels(), seed, 0.1f, /*bf16_exact=*/false);
    for (float& v : w) v += 1.f;
    return w;
  }
};

TEST_P(GpuRmsNormTest, ForwardMatchesReference) {
  const std::vector<float> x = RandomNormal(numel(), 1, 2.f);
  const std::vector<float> w = Gains(2);
  std::vector<float> y_ref(numel()), rstd_ref(rows());
  ref::RmsNormForward(x.data(), w.data(), y_ref.data(), rstd_ref.data(), rows(), channels(), kEps);

  DeviceBuffer<__nv_bfloat16> d_x(ToBf16(x)), d_y(numel());
  DeviceBuffer<float> d_w(w), d_rstd(rows());
  kernels::RmsNormForward(nullptr, d_y.get(), d_rstd.get(), d_x.get(), d_w.get(), rows(),
                          channels(), kEps);
  EXPECT_TRUE(Bf16Close(ToFloat(d_y.Download()), y_ref));
  EXPECT_TRUE(Fp32Close(d_rstd.Download(), rstd_ref));
}

TEST_P(GpuRmsNormTest, BackwardMatchesReferenceAndAccumulatesDweight) {
  const std::vector<float> x = RandomNormal(numel(), 3);
  const std::vector<float> dy = RandomNormal(numel(), 4);
  const std::vector<float> w = Gains(5);
  const std::vector<float> dw0 = RandomNormal(channels(), 6, 1.f, false);
  std::vector<float> y(numel()), rstd(rows()), dx_ref(numel()), dw_ref = dw0;
  ref::RmsNormForward(x.data(), w.data(), y.data(), rstd.data(), rows(), channels(), kEps);
  ref::RmsNormBackward(dy.data(), x.data(), w.data(), rstd.data(), dx_ref.data(), dw_ref.data(),
                       rows(), channels());

  DeviceBuffer<__nv_bfloat16> d_x(ToBf16(x)), d_dy(ToBf16(dy)), d_dx(numel());
  DeviceBuffer<float> d_w(w), d_rstd(rstd), d_dw(dw0);
  DeviceBuffer<char> ws(kernels::RmsNormBackwardWorkspaceBytes(rows(), channels()));
  kernels::RmsNormBackward(nullptr, d_dx.get(), d_dw.get(), d_dy.get(), d_x.get(), d_w.get(),
                           d_rstd.get(), rows(), channels(), /*accumulate_dx=*/false, ws.get(),
                           ws.size());
  EXPECT_TRUE(Bf16Close(ToFloat(d_dx.Download()), dx_ref));
  EXPECT_TRUE(Fp32Close(d_dw.Download(), dw_ref));
}

TEST_P(GpuRmsNormTest, BackwardAddsDxIntoResidualGradient) {
  const std::vector<float> x = RandomNormal(numel(), 7);
  const std::vector<float> dy = RandomNormal(numel(), 8);
  const std::vector<float> resid = RandomNormal(numel(), 9);
  const std::vector<float> w = Gains(10);
  std::vector<float> y(numel()), rstd(rows()), dx_ref(numel()), dw(channels(), 0.f);
  ref::RmsNormForward(x.data(), w.data(), y.data(), rstd.data(), rows(), channels(), kEps);
  ref::RmsNormBackward(dy.data(), x.data(), w.data(), rstd.data(), dx_ref.data(), dw.data(),
                       rows(), channels());
  for (size_t i = 0; i < numel(); ++i) dx_ref[i] += resid[i];

  DeviceBuffer<__nv_bfloat16> d_x(ToBf16(x)), d_dy(ToBf16(dy)), d_dx(ToBf16(resid));
  DeviceBuffer<float> d_w(w), d_rstd(rstd), d_dw(std::vector<float>(channels(), 0.f));
  DeviceBuffer<char> ws(kernels::RmsNormBackwardWorkspaceBytes(rows(), channels()));
  kernels::RmsNormBackward(nullptr, d_dx.get(), d_dw.get(), d_dy.get(), d_x.get(), d_w.get(),
                           d_rstd.get(), rows(), channels(), /*accumulate_dx=*/true, ws.get(),
                           ws.size());
  EXPECT_TRUE(Bf16Close(ToFloat(d_dx.Download()), dx_ref));
}

TEST_P(GpuRmsNormTest, BackwardInPlaceOverDyMatchesReferenceAndIsDeterministic) {
  const std::vector<float> x = RandomNormal(numel(), 11);
  const std::vector<float> dy = RandomNormal(numel(), 12);
  const std::vector<float> w = Gains(13);
  std::vector<float> y(numel()), rstd(rows()), dx_ref(numel()), dw_ref(channels(), 0.f);
  ref::RmsNormForward(x.data(), w.data(), y.data(), rstd.data(), rows(), channels(), kEps);
  ref::RmsNormBackward(dy.data(), x.data(), w.data(), rstd.data(), dx_ref.data(), dw_ref.data(),
                       rows(), channels());

  DeviceBuffer<__nv_bfloat16> d_x(ToBf16(x));
  DeviceBuffer<float> d_w(w), d_rstd(rstd);
  DeviceBuffer<char> ws(kernels::RmsNormBackwardWorkspaceBytes(rows(), channels()));
  std::vector<std::vector<float>> dweights;
  for (int run = 0; run < 2; ++run) {
    DeviceBuffer<__nv_bfloat16> d_grad(ToBf16(dy));  // dy in, dx out
    DeviceBuffer<float> d_dw(std::vector<float>(channels(), 0.f));
    kernels::RmsNormBackward(nullptr, d_grad.get(), d_dw.get(), d_grad.get(), d_x.get(),
                             d_w.get(), d_rstd.get(), rows(), channels(), false, ws.get(),
                             ws.size());
    EXPECT_TRUE(Bf16Close(ToFloat(d_grad.Download()), dx_ref));
    dweights.push_back(d_dw.Download());
  }
  EXPECT_TRUE(Fp32Close(dweights[0], dw_ref));
  EXPECT_TRUE(testing::SameBytes(dweights[0], dweights[1]));
}

INSTANTIATE_TEST_SUITE_P(Shapes, GpuRmsNormTest,
                         ::testing::Values(RmsNormShape{1, 32}, RmsNormShape{7, 100},
                                           RmsNormShape{130, 768}, RmsNormShape{257, 33},
                                           RmsNormShape{300, 2049}, RmsNormShape{64, 2048},
                                           RmsNormShape{40, 4096}),
                         [](const ::testing::TestParamInfo<RmsNormShape>& info) {
                           return std::to_string(info.param.rows) + "x" +
                                  std::to_string(info.param.channels);
                         });

}  // namespace
}  // namespace fp8d
