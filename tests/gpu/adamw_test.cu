// AdamW against core/ref/adamw.h over several steps, with clipping and the skip on a
// non-finite clip factor.
#include <cmath>
#include <cstdint>
#include <string>
#include <vector>

#include "core/ref/adamw.h"
#include "gtest/gtest.h"
#include "kernels/adamw.cuh"
#include "tests/gpu/gpu_test_util.h"

namespace fp8d {
namespace {

using testing::DeviceBuffer;
using testing::Fp32Close;
using testing::RandomNormal;

constexpr int kSteps = 3;

class GpuAdamWTest : public testing::GpuTest<int64_t> {
 protected:
  int64_t n() const { return GetParam(); }
};

TEST_P(GpuAdamWTest, StepsMatchReferenceAndWriteBf16Copy) {
  std::vector<float> p_ref = RandomNormal(n(), 1, 0.02f, false);
  std::vector<float> m_ref(n(), 0.f), v_ref(n(), 0.f);
  DeviceBuffer<float> d_p(p_ref), d_m(m_ref), d_v(v_ref);
  DeviceBuffer<__nv_bfloat16> d_p_bf16(n());
  DeviceBuffer<float> d_scale(1);

  for (int step = 1; step <= kSteps; ++step) {
    const std::vector<float> g = RandomNormal(n(), 100 + step, 0.01f, false);
    const float scale = step == 2 ? 0.5f : 1.f;  // step 2 is clipped
    ref::AdamWArgs a;
    a.lr = 1e-3f;
    a.weight_decay = 0.1f;
    a.step = step;
    ref::AdamWUpdate(p_ref.data(), g.data(), m_ref.data(), v_ref.data(), n(), a, scale);

    kernels::AdamWParams k;
    k.lr = a.lr;
    k.beta1 = a.beta1;
    k.beta2 = a.beta2;
    k.eps = a.eps;
    k.weight_decay = a.weight_decay;
    k.step = step;
    DeviceBuffer<float> d_g(g);
    d_scale.Upload({scale});
    kernels::AdamWUpdate(nullptr, d_p.get(), d_p_bf16.get(), d_m.get(), d_v.get(), d_g.get(), n(),
                         k, d_scale.get());
  }
  const std::vector<float> p = d_p.Download();
  EXPECT_TRUE(Fp32Close(p, p_ref));
  EXPECT_TRUE(Fp32Close(d_m.Download(), m_ref));
  EXPECT_TRUE(Fp32Close(d_v.Download(), v_ref));
  std::vector<float> p_rounded(p.size());
  for (size_t i = 0; i < p.size(); ++i) p_rounded[i] = testing::RoundToBf16(p[i]);
  EXPECT_TRUE(testing::SameBytes(testing::ToFloat(d_p_bf16.Download()), p_rounded));
}

TEST_P(GpuAdamWTest, WithoutScaleOrCopyMatchesReferenceAtScaleOne) {
  std::vector<float> p_ref = RandomNormal(n(), 2, 0.02f, false);
  std::vector<float> m_ref = RandomNormal(n(), 3, 0.001f, false);
  std::vector<float> v_ref(n(), 1e-6f);
  const std::vector<float> g = RandomNormal(n(), 4, 0.01f, false);
  DeviceBuffer<float> d_p(p_ref), d_m(m_ref), d_v(v_ref), d_g(g);
  ref::AdamWArgs a;
  a.lr = 3e-4f;
  a.step = 7;
  ref::AdamWUpdate(p_ref.data(), g.data(), m_ref.data(), v_ref.data(), n(), a, 1.f);
  kernels::AdamWParams k;
  k.lr = a.lr;
  k.step = a.step;
  kernels::AdamWUpdate(nullptr, d_p.get(), nullptr, d_m.get(), d_v.get(), d_g.get(), n(), k,
                       nullptr);
  EXPECT_TRUE(Fp32Close(d_p.Download(), p_ref));
  EXPECT_TRUE(Fp32Close(d_m.Download(), m_ref));
}

TEST_P(GpuAdamWTest, NanClipFactorLeavesStateUntouched) {
  const std::vector<float> p = RandomNormal(n(), 5, 0.02f, false);
  const std::vector<float> m = RandomNormal(n(), 6, 0.001f, false);
  const std::vector<float> v(n(), 1e-6f);
  const std::vector<float> g = RandomNormal(n(), 7, 0.01f, false);
  DeviceBuffer<float> d_p(p), d_m(m), d_v(v), d_g(g), d_scale(std::vector<float>{NAN});
  const std::vector<__nv_bfloat16> copy = testing::ToBf16(p);
  DeviceBuffer<__nv_bfloat16> d_p_bf16(copy);
  kernels::AdamWParams k;
  k.lr = 1e-3f;
  kernels::AdamWUpdate(nullptr, d_p.get(), d_p_bf16.get(), d_m.get(), d_v.get(), d_g.get(), n(),
                       k, d_scale.get());
  EXPECT_TRUE(testing::SameBytes(d_p.Download(), p));
  EXPECT_TRUE(testing::SameBytes(d_m.Download(), m));
  EXPECT_TRUE(testing::SameBytes(d_v.Download(), v));
  EXPECT_TRUE(testing::SameBytes(d_p_bf16.Download(), copy));
}

INSTANTIATE_TEST_SUITE_P(Sizes, GpuAdamWTest, ::testing::Values(1, 1000, 70001, 1 << 21),
                         [](const ::testing::TestParamInfo<int64_t>& info) {
                           return "n" + std::to_string(info.param);
                         });

}  // namespace
}  // namespace fp8d
