// The fused producer + FP8 cast kernels (kernels/fp8_fused.cuh) against the unfused pair they
// replace, on random data: the row-major and transposed codes, scale_inv and the statistics
// must be identical byte for byte (and RMSNorm's rstd bit for bit), in both FP8 formats, for
// several shapes including one with more tiles than the kernel's persistent grid. The unfused
// kernels are themselves checked against the CPU reference in rmsnorm_test, swiglu_test and
// fp8_cast_test.
#include "kernels/fp8_fused.cuh"

#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <cstdint>
#include <vector>

#include "gtest/gtest.h"
#include "kernels/fp8_cast.cuh"
#include "kernels/rmsnorm.cuh"
#include "kernels/swiglu.cuh"
#include "tests/gpu/gpu_test_util.h"

namespace fp8d::kernels {
namespace {

using ::fp8d::testing::DeviceBuffer;
using ::fp8d::testing::RandomNormal;
using ::fp8d::testing::SameBytes;
using ::fp8d::testing::ToBf16;

struct FusedShape {
  int64_t rows;
  int cols;  // channels for RMSNorm, d_ff for SwiGLU
};

const std::vector<FusedShape> kShapes = {{64, 64}, {128, 768}, {256, 2048}, {2048, 1536}};
const Fp8Format kFormats[] = {Fp8Format::kE4M3, Fp8Format::kE5M2};

// The codes, scale_inv and stats of one cast target.
struct Outputs {
  DeviceBuffer<uint8_t> data, data_t;
  DeviceBuffer<float> scale_inv;
  DeviceBuffer<Fp8CastStats> stats;
  Outputs(int64_t rows, int64_t cols)
      : data(static_cast<size_t>(rows * cols)),
        data_t(static_cast<size_t>(rows * cols)),
        scale_inv(1),
        stats(1) {}
  Fp8CastTarget Target(Fp8Format format, const float* scale) const {
    Fp8CastTarget t;
    t.format = format;
    t.scale = scale;
    t.data = data.get();
    t.data_t = data_t.get();
    t.scale_inv = scale_inv.get();
    t.stats = stats.get();
    return t;
  }
};

void ExpectSame(const Outputs& fused, const Outputs& unfused) {
  EXPECT_TRUE(SameBytes(fused.data.Download(), unfused.data.Download())) << "codes";
  EXPECT_TRUE(SameBytes(fused.data_t.Download(), unfused.data_t.Download())) << "transposed";
  EXPECT_TRUE(SameBytes(fused.scale_inv.Download(), unfused.scale_inv.Download())) << "scale_inv";
  const Fp8CastStats a = fused.stats.Download()[0], b = unfused.stats.Download()[0];
  EXPECT_EQ(a.amax, b.amax);
  EXPECT_EQ(a.saturated, b.saturated);
  EXPECT_EQ(a.underflow, b.underflow);
  EXPECT_EQ(a.nonzero, b.nonzero);
  EXPECT_GT(b.nonzero, 0u);
}

// A scale that saturates the largest values of a N(0, 1)-ish tensor and flushes the smallest,
// so the codes exercise both ends of the format.
float ScaleFor(Fp8Format format) { return format == Fp8Format::kE4M3 ? 200.f : 8000.f; }

class GpuFp8FusedTest : public ::fp8d::testing::GpuTest<> {};

TEST_F(GpuFp8FusedTest, RmsNormToFp8MatchesRmsNormThenCast) {
  uint64_t seed = 100;
  for (const FusedShape& s : kShapes) {
    for (Fp8Format format : kFormats) {
      SCOPED_TRACE(::testing::Message() << s.rows << "x" << s.cols << " "
                                        << (format == Fp8Format::kE4M3 ? "E4M3" : "E5M2"));
      const size_t n = static_cast<size_t>(s.rows) * s.cols;
      DeviceBuffer<__nv_bfloat16> x(ToBf16(RandomNormal(n, ++seed, 3.f)));
      DeviceBuffer<float> w(RandomNormal(s.cols, ++seed, 0.5f, false));
      DeviceBuffer<float> scale(std::vector<float>{ScaleFor(format)});
      DeviceBuffer<__nv_bfloat16> y(n);
      DeviceBuffer<float> rstd_fused(s.rows), rstd(s.rows);
      Outputs fused(s.rows, s.cols), unfused(s.rows, s.cols);

      RmsNormForwardToFp8(nullptr, rstd_fused.get(), x.get(), w.get(), s.rows, s.cols, 1e-5f,
                          fused.Target(format, scale.get()));
      RmsNormForward(nullptr, y.get(), rstd.get(), x.get(), w.get(), s.rows, s.cols, 1e-5f);
      CastToFp8(y.get(), s.rows, s.cols, format, scale.get(), unfused.data.get(),
                unfused.data_t.get(), unfused.scale_inv.get(), unfused.stats.get(), nullptr);
      FP8D_TEST_CUDA(cudaDeviceSynchronize());
      EXPECT_TRUE(SameBytes(rstd_fused.Download(), rstd.Download())) << "rstd";
      ExpectSame(fused, unfused);
    }
  }
}

TEST_F(GpuFp8FusedTest, SwiGluToFp8MatchesSwiGluThenCast) {
  uint64_t seed = 200;
  for (const FusedShape& s : kShapes) {
    for (Fp8Format format : kFormats) {
      SCOPED_TRACE(::testing::Message() << s.rows << "x" << s.cols << " "
                                        << (format == Fp8Format::kE4M3 ? "E4M3" : "E5M2"));
      const size_t n = static_cast<size_t>(s.rows) * s.cols;
      DeviceBuffer<__nv_bfloat16> gate_up(ToBf16(RandomNormal(2 * n, ++seed, 2.f)));
      DeviceBuffer<float> scale(std::vector<float>{ScaleFor(format)});
      DeviceBuffer<__nv_bfloat16> h(n);
      Outputs fused(s.rows, s.cols), unfused(s.rows, s.cols);

      SwiGluForwardToFp8(nullptr, gate_up.get(), s.rows, s.cols, fused.Target(format, scale.get()));
      SwiGluForward(nullptr, h.get(), gate_up.get(), s.rows, s.cols);
      CastToFp8(h.get(), s.rows, s.cols, format, scale.get(), unfused.data.get(),
                unfused.data_t.get(), unfused.scale_inv.get(), unfused.stats.get(), nullptr);
      FP8D_TEST_CUDA(cudaDeviceSynchronize());
      ExpectSame(fused, unfused);
    }
  }
}

TEST_F(GpuFp8FusedTest, SwiGluBackwardToFp8MatchesSwiGluBackwardThenCast) {
  uint64_t seed = 300;
  for (const FusedShape& s : kShapes) {
    for (Fp8Format format : kFormats) {
      SCOPED_TRACE(::testing::Message() << s.rows << "x" << s.cols << " "
                                        << (format == Fp8Format::kE4M3 ? "E4M3" : "E5M2"));
      const size_t n = static_cast<size_t>(s.rows) * s.cols;
      DeviceBuffer<__nv_bfloat16> gate_up(ToBf16(RandomNormal(2 * n, ++seed, 2.f)));
      DeviceBuffer<__nv_bfloat16> dh(ToBf16(RandomNormal(n, ++seed, 1e-2f)));
      // Gradients are small: a scale that puts them in the format's range.
      DeviceBuffer<float> scale(std::vector<float>{ScaleFor(format) * 100.f});
      DeviceBuffer<__nv_bfloat16> dgate_up(2 * n);
      Outputs fused(s.rows, 2 * s.cols), unfused(s.rows, 2 * s.cols);

      SwiGluBackwardToFp8(nullptr, dh.get(), gate_up.get(), s.rows, s.cols,
                          fused.Target(format, scale.get()));
      SwiGluBackward(nullptr, dgate_up.get(), dh.get(), gate_up.get(), s.rows, s.cols);
      CastToFp8(dgate_up.get(), s.rows, 2 * s.cols, format, scale.get(), unfused.data.get(),
                unfused.data_t.get(), unfused.scale_inv.get(), unfused.stats.get(), nullptr);
      FP8D_TEST_CUDA(cudaDeviceSynchronize());
      ExpectSame(fused, unfused);
    }
  }
}

TEST(GpuFp8FusedFitsTest, NeedsMultiplesOf64) {
  EXPECT_TRUE(FusedFp8CastFits(64, 128));
  EXPECT_FALSE(FusedFp8CastFits(48, 128));
  EXPECT_FALSE(FusedFp8CastFits(64, 100));
  EXPECT_FALSE(FusedFp8CastFits(0, 64));
}

}  // namespace
}  // namespace fp8d::kernels
