// RoPE kernels against core/ref/rope.h, rotating Q inside a fused QKV-like buffer so that the
// columns past n_heads * head_dim must come out untouched.
#include <string>
#include <vector>

#include "core/ref/rope.h"
#include "gtest/gtest.h"
#include "kernels/rope.cuh"
#include "tests/gpu/gpu_test_util.h"

namespace fp8d {
namespace {

using testing::Bf16Close;
using testing::DeviceBuffer;
using testing::RandomNormal;
using testing::ToBf16;
using testing::ToFloat;

constexpr float kTheta = 10000.f;

struct RopeShape {
  int batch;
  int seq_len;
  int n_heads;
  int head_dim;
  int row_stride;
};

class GpuRopeTest : public testing::GpuTest<RopeShape> {
 protected:
  const RopeShape& s() const { return GetParam(); }
  size_t numel() const { return static_cast<size_t>(s().batch) * s().seq_len * s().row_stride; }
};

TEST_P(GpuRopeTest, ForwardMatchesReference) {
  std::vector<float> x = RandomNormal(numel(), 1);
  DeviceBuffer<__nv_bfloat16> d_x(ToBf16(x));
  ref::RopeForward(x.data(), s().batch, s().seq_len, s().n_heads, s().head_dim, s().row_stride,
                   kTheta);
  kernels::RopeForward(nullptr, d_x.get(), s().batch, s().seq_len, s().n_heads, s().head_dim,
                       s().row_stride, kTheta);
  EXPECT_TRUE(Bf16Close(ToFloat(d_x.Download()), x));
}

TEST_P(GpuRopeTest, BackwardMatchesReference) {
  std::vector<float> dx = RandomNormal(numel(), 2);
  DeviceBuffer<__nv_bfloat16> d_dx(ToBf16(dx));
  ref::RopeBackward(dx.data(), s().batch, s().seq_len, s().n_heads, s().head_dim, s().row_stride,
                    kTheta);
  kernels::RopeBackward(nullptr, d_dx.get(), s().batch, s().seq_len, s().n_heads, s().head_dim,
                        s().row_stride, kTheta);
  EXPECT_TRUE(Bf16Close(ToFloat(d_dx.Download()), dx));
}

INSTANTIATE_TEST_SUITE_P(Shapes, GpuRopeTest,
                         ::testing::Values(RopeShape{1, 1, 1, 2, 2}, RopeShape{2, 17, 3, 8, 40},
                                           RopeShape{2, 130, 4, 64, 512},
                                           RopeShape{1, 300, 2, 128, 256},
                                           RopeShape{3, 1025, 1, 6, 9}),
                         [](const ::testing::TestParamInfo<RopeShape>& info) {
                           const RopeShape& s = info.param;
                           return "B" + std::to_string(s.batch) + "_T" +
                                  std::to_string(s.seq_len) + "_H" + std::to_string(s.n_heads) +
                                  "_hd" + std::to_string(s.head_dim) + "_stride" +
                                  std::to_string(s.row_stride);
                         });

}  // namespace
}  // namespace fp8d
