// SwiGLU kernels against core/ref/swiglu.h on BF16-rounded inputs, and the 16-byte vector path
// against the element-wise fallback bit for bit.
#include <algorithm>
#include <cstdint>
#include <cstring>
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
using testing::SameBytes;
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

std::string ShapeName(const ::testing::TestParamInfo<SwiGluShape>& info) {
  return std::to_string(info.param.rows) + "x" + std::to_string(info.param.d_ff);
}

// d_ff % 8 == 0 takes the vector path (8192 and 2048 are the model widths; 40 has five vectors
// per row, so the grid stride is not a whole number of rows; 600x8192 needs more than one
// grid-stride pass on an H100); the others take the element-wise fallback.
INSTANTIATE_TEST_SUITE_P(Shapes, GpuSwiGluTest,
                         ::testing::Values(SwiGluShape{1, 1}, SwiGluShape{3, 100},
                                           SwiGluShape{64, 257}, SwiGluShape{130, 1024},
                                           SwiGluShape{1000, 771}, SwiGluShape{1, 8},
                                           SwiGluShape{4, 8192}, SwiGluShape{33, 2048},
                                           SwiGluShape{517, 40}, SwiGluShape{600, 8192}),
                         ShapeName);

// The launchers take the 16-byte vector path only for 16-byte aligned pointers. The same data
// one BF16 element past an aligned address (the buffers below carry one leading pad element)
// goes through the element-wise kernels, so comparing the two checks that the vector path
// computes exactly the same bits. The pad elements stay as poisoned: nothing writes outside
// the tensor.
class GpuSwiGluVectorPathTest : public testing::GpuTest<SwiGluShape> {
 protected:
  int rows() const { return GetParam().rows; }
  int d_ff() const { return GetParam().d_ff; }
  size_t h_numel() const { return static_cast<size_t>(rows()) * d_ff(); }

  // Spread 30 drives the sigmoid to exactly 0 and 1 and its exponential to overflow.
  static std::vector<__nv_bfloat16> Inputs(size_t n, uint64_t seed) {
    return ToBf16(RandomNormal(n, seed, 30.f));
  }
  // `x` with one pad element in front, so x starts 2 bytes past an aligned address on device.
  static std::vector<__nv_bfloat16> Padded(const std::vector<__nv_bfloat16>& x) {
    std::vector<__nv_bfloat16> out(x.size() + 1);
    std::copy(x.begin(), x.end(), out.begin() + 1);
    return out;
  }
  // Splits a downloaded padded buffer into its pad element's bits and the tensor.
  static std::vector<__nv_bfloat16> Unpad(const std::vector<__nv_bfloat16>& x, uint16_t* pad) {
    std::memcpy(pad, x.data(), sizeof(*pad));
    return std::vector<__nv_bfloat16>(x.begin() + 1, x.end());
  }
  static constexpr uint16_t kPoisonBits = 0xFFFF;
};

TEST_P(GpuSwiGluVectorPathTest, ForwardBitIdenticalToElementwisePath) {
  const std::vector<__nv_bfloat16> gu = Inputs(2 * h_numel(), 11);
  DeviceBuffer<__nv_bfloat16> d_gu(gu), d_h(h_numel());
  kernels::SwiGluForward(nullptr, d_h.get(), d_gu.get(), rows(), d_ff());

  DeviceBuffer<__nv_bfloat16> d_gu_odd(Padded(gu)), d_h_odd(h_numel() + 1);
  kernels::SwiGluForward(nullptr, d_h_odd.get() + 1, d_gu_odd.get() + 1, rows(), d_ff());

  uint16_t pad = 0;
  const std::vector<__nv_bfloat16> h_odd = Unpad(d_h_odd.Download(), &pad);
  EXPECT_EQ(pad, kPoisonBits);
  EXPECT_TRUE(SameBytes(d_h.Download(), h_odd));
}

TEST_P(GpuSwiGluVectorPathTest, BackwardBitIdenticalToElementwisePath) {
  const std::vector<__nv_bfloat16> gu = Inputs(2 * h_numel(), 12);
  const std::vector<__nv_bfloat16> dh = Inputs(h_numel(), 13);
  DeviceBuffer<__nv_bfloat16> d_gu(gu), d_dh(dh), d_dgu(2 * h_numel());
  kernels::SwiGluBackward(nullptr, d_dgu.get(), d_dh.get(), d_gu.get(), rows(), d_ff());

  DeviceBuffer<__nv_bfloat16> d_gu_odd(Padded(gu)), d_dh_odd(Padded(dh)),
      d_dgu_odd(2 * h_numel() + 1);
  kernels::SwiGluBackward(nullptr, d_dgu_odd.get() + 1, d_dh_odd.get() + 1, d_gu_odd.get() + 1,
                          rows(), d_ff());

  uint16_t pad = 0;
  const std::vector<__nv_bfloat16> dgu_odd = Unpad(d_dgu_odd.Download(), &pad);
  EXPECT_EQ(pad, kPoisonBits);
  EXPECT_TRUE(SameBytes(d_dgu.Download(), dgu_odd));
}

TEST_P(GpuSwiGluVectorPathTest, BackwardInPlaceBitIdenticalToElementwisePath) {
  const std::vector<__nv_bfloat16> gu = Inputs(2 * h_numel(), 14);
  const std::vector<__nv_bfloat16> dh = Inputs(h_numel(), 15);
  DeviceBuffer<__nv_bfloat16> d_gu(gu), d_dh(dh);
  kernels::SwiGluBackward(nullptr, d_gu.get(), d_dh.get(), d_gu.get(), rows(), d_ff());

  // Out of place on the vector path: the in-place result must not depend on the aliasing.
  DeviceBuffer<__nv_bfloat16> d_gu_src(gu), d_dgu(2 * h_numel());
  kernels::SwiGluBackward(nullptr, d_dgu.get(), d_dh.get(), d_gu_src.get(), rows(), d_ff());

  DeviceBuffer<__nv_bfloat16> d_gu_odd(Padded(gu)), d_dh_odd(Padded(dh));
  kernels::SwiGluBackward(nullptr, d_gu_odd.get() + 1, d_dh_odd.get() + 1, d_gu_odd.get() + 1,
                          rows(), d_ff());

  const std::vector<__nv_bfloat16> in_place = d_gu.Download();
  EXPECT_TRUE(SameBytes(in_place, d_dgu.Download()));
  uint16_t pad = 0;
  EXPECT_TRUE(SameBytes(in_place, Unpad(d_gu_odd.Download(), &pad)));
}

INSTANTIATE_TEST_SUITE_P(VectorShapes, GpuSwiGluVectorPathTest,
                         ::testing::Values(SwiGluShape{1, 8}, SwiGluShape{3, 2048},
                                           SwiGluShape{517, 40}, SwiGluShape{4, 8192},
                                           SwiGluShape{600, 8192}),
                         ShapeName);

}  // namespace
}  // namespace fp8d
