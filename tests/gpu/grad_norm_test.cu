// Global gradient norm and clip factor against core/ref/grad_norm.h.
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "core/ref/grad_norm.h"
#include "gtest/gtest.h"
#include "kernels/grad_norm.cuh"
#include "tests/gpu/gpu_test_util.h"

namespace fp8d {
namespace {

using testing::DeviceBuffer;
using testing::RandomNormal;

// Both sides sum in double; only the order differs, which the FP32 result almost never sees.
constexpr float kNormRelTol = 1e-6f;

struct NormResult {
  float norm;
  float clip;
};

// Runs partials over each buffer into one partials array, then finalizes.
NormResult GpuNorm(const std::vector<std::vector<float>>& grads, float max_norm) {
  DeviceBuffer<double> partials(grads.size() * kernels::kGradNormBlocks);
  std::vector<std::unique_ptr<DeviceBuffer<float>>> buffers;
  for (size_t i = 0; i < grads.size(); ++i) {
    buffers.push_back(std::make_unique<DeviceBuffer<float>>(grads[i]));
    kernels::GradSquaredNormPartials(nullptr, partials.get() + i * kernels::kGradNormBlocks,
                                     buffers.back()->get(), grads[i].size());
  }
  // A finite wrong value rather than the NaN poison, so that the expected NaN of a non-finite
  // gradient cannot be mistaken for an output that was never written.
  DeviceBuffer<float> norm(std::vector<float>{-1.f}), clip(std::vector<float>{-1.f});
  kernels::GradNormFinalize(nullptr, norm.get(), clip.get(), partials.get(),
                            static_cast<int>(partials.size()), max_norm);
  return {norm.Download()[0], clip.Download()[0]};
}

float RefNorm(const std::vector<std::vector<float>>& grads) {
  std::vector<std::pair<const float*, int64_t>> views;
  for (const auto& g : grads) views.emplace_back(g.data(), static_cast<int64_t>(g.size()));
  return ref::GlobalGradNorm(views);
}

class GpuGradNormTest : public testing::GpuTest<std::vector<int64_t>> {
 protected:
  std::vector<std::vector<float>> Grads(uint64_t seed) const {
    std::vector<std::vector<float>> grads;
    for (int64_t n : GetParam()) grads.push_back(RandomNormal(n, seed++, 0.1f, false));
    return grads;
  }
};

TEST_P(GpuGradNormTest, NormMatchesReference) {
  const auto grads = Grads(1);
  const float want = RefNorm(grads);
  const NormResult got = GpuNorm(grads, /*max_norm=*/0.f);
  EXPECT_NEAR(got.norm, want, kNormRelTol * want);
  EXPECT_EQ(got.clip, 1.f);
}

TEST_P(GpuGradNormTest, ClipFactorMatchesReference) {
  const auto grads = Grads(2);
  const float norm = RefNorm(grads);
  for (float max_norm : {norm * 0.5f, norm * 2.f}) {
    const NormResult got = GpuNorm(grads, max_norm);
    const float want = ref::ClipFactor(norm, max_norm);
    EXPECT_NEAR(got.clip, want, kNormRelTol * want) << "max_norm " << max_norm;
  }
}

TEST_P(GpuGradNormTest, RepeatedRunsAreBitIdentical) {
  const auto grads = Grads(3);
  const NormResult a = GpuNorm(grads, 1.f);
  const NormResult b = GpuNorm(grads, 1.f);
  EXPECT_EQ(std::memcmp(&a, &b, sizeof(a)), 0);
}

TEST_P(GpuGradNormTest, NonFiniteGradientGivesNanClipFactor) {
  auto grads = Grads(4);
  grads.back().back() = std::numeric_limits<float>::infinity();
  const NormResult got = GpuNorm(grads, 1.f);
  EXPECT_FALSE(std::isfinite(got.norm));
  EXPECT_TRUE(std::isnan(got.clip));
}

INSTANTIATE_TEST_SUITE_P(Sizes, GpuGradNormTest,
                         ::testing::Values(std::vector<int64_t>{1}, std::vector<int64_t>{1000},
                                           std::vector<int64_t>{4099, 7, 300001},
                                           std::vector<int64_t>{(1 << 22) + 3}),
                         [](const ::testing::TestParamInfo<std::vector<int64_t>>& info) {
                           std::string name;
                           for (int64_t n : info.param) {
                             name += (name.empty() ? "" : "_") + std::to_string(n);
                           }
                           return name;
                         });

}  // namespace
}  // namespace fp8d
