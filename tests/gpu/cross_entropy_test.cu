// Fused cross-entropy against core/ref/cross_entropy.h on BF16-rounded logits.
#include <cstdint>
#include <string>
#include <vector>

#include "core/ref/cross_entropy.h"
#include "gtest/gtest.h"
#include "kernels/cross_entropy.cuh"
#include "tests/gpu/gpu_test_util.h"

namespace fp8d {
namespace {

using testing::Bf16Close;
using testing::DeviceBuffer;
using testing::Fp32Close;
using testing::RandomNormal;
using testing::RandomTokens;
using testing::ToBf16;
using testing::ToFloat;

struct CrossEntropyShape {
  int rows;
  int vocab;
};

class GpuCrossEntropyTest : public testing::GpuTest<CrossEntropyShape> {
 protected:
  int rows() const { return GetParam().rows; }
  int vocab() const { return GetParam().vocab; }
  size_t numel() const { return static_cast<size_t>(rows()) * vocab(); }

  // Per-row losses from the reference, one row at a time.
  std::vector<float> RowLosses(const std::vector<float>& logits,
                               const std::vector<int32_t>& targets) const {
    std::vector<float> out(rows());
    for (int r = 0; r < rows(); ++r) {
      out[r] = ref::CrossEntropyForwardBackward(logits.data() + static_cast<size_t>(r) * vocab(),
                                                targets.data() + r, nullptr, 1, vocab(), 1.f);
    }
    return out;
  }
};

TEST_P(GpuCrossEntropyTest, InPlaceGradientAndLossesMatchReference) {
  const std::vector<float> logits = RandomNormal(numel(), 1, 3.f);
  const std::vector<int32_t> targets = RandomTokens(rows(), vocab(), 2);
  std::vector<float> dlogits_ref(numel());
  const float mean_ref = ref::CrossEntropyForwardBackward(
      logits.data(), targets.data(), dlogits_ref.data(), rows(), vocab(), /*dloss=*/1.f);

  DeviceBuffer<__nv_bfloat16> d_logits(ToBf16(logits));
  DeviceBuffer<int32_t> d_targets(targets);
  DeviceBuffer<float> d_losses(rows()), d_mean(1);
  kernels::CrossEntropyForwardBackward(nullptr, d_losses.get(), d_logits.get(), d_logits.get(),
                                       d_targets.get(), rows(), vocab(), 1.f / rows());
  kernels::MeanLoss(nullptr, d_mean.get(), d_losses.get(), rows());

  EXPECT_TRUE(Bf16Close(ToFloat(d_logits.Download()), dlogits_ref));
  EXPECT_TRUE(Fp32Close(d_losses.Download(), RowLosses(logits, targets)));
  EXPECT_TRUE(Fp32Close(d_mean.Download(), {mean_ref}));
}

TEST_P(GpuCrossEntropyTest, GradientToSeparateBufferLeavesLogitsAlone) {
  const std::vector<float> logits = RandomNormal(numel(), 3, 3.f);
  const std::vector<int32_t> targets = RandomTokens(rows(), vocab(), 4);
  const float dloss = 0.25f;  // e.g. one of four micro-batches
  std::vector<float> dlogits_ref(numel());
  ref::CrossEntropyForwardBackward(logits.data(), targets.data(), dlogits_ref.data(), rows(),
                                   vocab(), dloss);

  DeviceBuffer<__nv_bfloat16> d_logits(ToBf16(logits)), d_dlogits(numel());
  DeviceBuffer<int32_t> d_targets(targets);
  DeviceBuffer<float> d_losses(rows());
  kernels::CrossEntropyForwardBackward(nullptr, d_losses.get(), d_dlogits.get(), d_logits.get(),
                                       d_targets.get(), rows(), vocab(), dloss / rows());
  EXPECT_TRUE(Bf16Close(ToFloat(d_dlogits.Download()), dlogits_ref));
  EXPECT_TRUE(testing::SameBytes(ToFloat(d_logits.Download()), logits));
}

TEST_P(GpuCrossEntropyTest, EvalWritesLossesOnly) {
  const std::vector<float> logits = RandomNormal(numel(), 5, 3.f);
  const std::vector<int32_t> targets = RandomTokens(rows(), vocab(), 6);
  DeviceBuffer<__nv_bfloat16> d_logits(ToBf16(logits));
  DeviceBuffer<int32_t> d_targets(targets);
  DeviceBuffer<float> d_losses(rows());
  kernels::CrossEntropyForwardBackward(nullptr, d_losses.get(), nullptr, d_logits.get(),
                                       d_targets.get(), rows(), vocab(), 1.f);
  EXPECT_TRUE(Fp32Close(d_losses.Download(), RowLosses(logits, targets)));
  EXPECT_TRUE(testing::SameBytes(ToFloat(d_logits.Download()), logits));
}

INSTANTIATE_TEST_SUITE_P(Shapes, GpuCrossEntropyTest,
                         ::testing::Values(CrossEntropyShape{1, 2}, CrossEntropyShape{5, 257},
                                           CrossEntropyShape{33, 1000},
                                           CrossEntropyShape{16, 50304},
                                           CrossEntropyShape{1025, 513}),
                         [](const ::testing::TestParamInfo<CrossEntropyShape>& info) {
                           return std::to_string(info.param.rows) + "x" +
                                  std::to_string(info.param.vocab);
                         });

}  // namespace
}  // namespace fp8d
