// The delayed-scaling update kernel against core's AmaxHistory + ComputeScale, step by step over
// amax sequences with zeros, NaN, inf and subnormals, for both reduction algorithms, several
// window lengths (including none) and margins. Histories and scales must match bit for bit.
#include <cuda_runtime.h>

#include <cmath>
#include <cstdint>
#include <limits>
#include <vector>

#include "core/fp8_format.h"
#include "core/fp8_scaling.h"
#include "core/rng.h"
#include "gtest/gtest.h"
#include "kernels/delayed_scaling.cuh"
#include "tests/gpu/gpu_test_util.h"

namespace fp8d::kernels {
namespace {

using ::fp8d::testing::DeviceBuffer;
using ::fp8d::testing::SameBytes;

constexpr float kNan = std::numeric_limits<float>::quiet_NaN();
constexpr float kInf = std::numeric_limits<float>::infinity();

// This step's amax of tensor t: mostly ordinary magnitudes, with the special values at fixed
// steps so every tensor sees each of them, shifted per tensor so windows differ.
float StepAmax(int step, int t, Rng* rng) {
  switch ((step + t) % 11) {
    case 3: return 0.f;
    case 5: return kNan;
    case 7: return kInf;
    case 9: return 1e-40f;  // fp8_max / amax overflows: the previous scale stays
    default: return static_cast<float>(std::exp(rng->NextNormal() * 3.0));
  }
}

class GpuFp8DelayedScalingTest : public ::fp8d::testing::GpuTest<> {};

TEST_F(GpuFp8DelayedScalingTest, MatchesCpuHistoryAndScaleOverManySteps) {
  constexpr int kTensors = 37;  // more than one warp, not a multiple of the block
  constexpr int kSteps = 40;
  for (AmaxAlgo algo : {AmaxAlgo::kMax, AmaxAlgo::kMostRecent}) {
    for (int len : {0, 1, 4, 16}) {
      for (int margin : {0, 3}) {
        SCOPED_TRACE(::testing::Message() << (algo == AmaxAlgo::kMax ? "max" : "most_recent")
                                          << " len " << len << " margin " << margin);
        std::vector<AmaxHistory> cpu(kTensors, AmaxHistory(len, algo));
        std::vector<float> cpu_scales(kTensors, 1.f);
        std::vector<float> fp8_max(kTensors);
        for (int t = 0; t < kTensors; ++t) {
          fp8_max[t] = t % 3 == 2 ? Fp8Max(Fp8Format::kE5M2) : Fp8Max(Fp8Format::kE4M3);
        }
        DeviceBuffer<float> d_hist(std::vector<float>(static_cast<size_t>(kTensors) * len, 0.f));
        DeviceBuffer<float> d_scales(cpu_scales);
        DeviceBuffer<float> d_scale_inv(kTensors);
        DeviceBuffer<float> d_fp8_max(fp8_max);
        DeviceBuffer<float> d_amax(kTensors);
        Rng rng(1234);
        for (int step = 0; step < kSteps; ++step) {
          std::vector<float> amax(kTensors);
          for (int t = 0; t < kTensors; ++t) amax[t] = StepAmax(step, t, &rng);
          for (int t = 0; t < kTensors; ++t) {
            cpu[t].Push(amax[t]);
            cpu_scales[t] = ComputeScale(cpu[t].Reduced(), fp8_max[t], margin, cpu_scales[t]);
          }
          d_amax.Upload(amax);
          DelayedScalingUpdate(d_amax.get(), d_hist.get(), len, d_fp8_max.get(), kTensors, algo,
                               margin, d_scales.get(), d_scale_inv.get(), nullptr);
          FP8D_TEST_CUDA(cudaDeviceSynchronize());

          std::vector<float> want_hist;
          std::vector<float> want_inv(kTensors);
          for (int t = 0; t < kTensors; ++t) {
            want_hist.insert(want_hist.end(), cpu[t].window().begin(), cpu[t].window().end());
            want_inv[t] = 1.0f / cpu_scales[t];
          }
          ASSERT_TRUE(SameBytes(d_hist.Download(), want_hist)) << "history at step " << step;
          ASSERT_TRUE(SameBytes(d_scales.Download(), cpu_scales)) << "scales at step " << step;
          ASSERT_TRUE(SameBytes(d_scale_inv.Download(), want_inv)) << "scale_inv at step " << step;
        }
        // The sequence must have moved the scales away from their start, or nothing was tested.
        if (len > 0) {
          int moved = 0;
          for (float s : cpu_scales) moved += s != 1.f;
          EXPECT_GT(moved, kTensors / 2);
        }
      }
    }
  }
}

TEST_F(GpuFp8DelayedScalingTest, NanAmaxInMaxWindowIsSkippedAndInfKeepsPreviousScale) {
  // Window of 3, max algorithm, one E4M3 tensor: hand-checked expectations.
  DeviceBuffer<float> hist(std::vector<float>{0.f, 0.f, 0.f});
  DeviceBuffer<float> scales(std::vector<float>{1.f});
  DeviceBuffer<float> fp8_max(std::vector<float>{448.f});
  DeviceBuffer<float> amax(1);
  auto step = [&](float a) {
    amax.Upload({a});
    DelayedScalingUpdate(amax.get(), hist.get(), 3, fp8_max.get(), 1, AmaxAlgo::kMax, 0,
                         scales.get(), nullptr, nullptr);
    return scales.Download()[0];
  };
  EXPECT_EQ(step(2.f), 224.f);
  EXPECT_EQ(step(kNan), 224.f);  // window {NaN, 2, 0}: fmaxf skips the NaN
  EXPECT_EQ(step(kInf), 224.f);  // window {inf, NaN, 2}: reduced inf keeps the previous scale
  EXPECT_EQ(step(1.f), 224.f);   // window {1, inf, NaN}: still inf
  EXPECT_EQ(step(1.f), 224.f);   // window {1, 1, inf}: still inf
  EXPECT_EQ(step(1.f), 448.f);   // window {1, 1, 1}: the inf has left the window
}

}  // namespace
}  // namespace fp8d::kernels
