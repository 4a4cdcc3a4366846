// FP8 cast kernels against core's CPU emulation (core/fp8_format.h, core/fp8_quantize.h): the
// bytes must be identical, the transposed copy the exact transpose, the amax exact and the
// saturation / underflow counts equal to QuantStats, on data with outliers, zeros and values
// small enough to flush, over shapes that are and are not multiples of the tile and of 128.
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <string>
#include <vector>

#include "core/fp8_format.h"
#include "core/fp8_quantize.h"
#include "core/fp8_scaling.h"
#include "core/rng.h"
#include "gtest/gtest.h"
#include "kernels/fp8_cast.cuh"
#include "tests/gpu/gpu_test_util.h"

namespace fp8d::kernels {
namespace {

using ::fp8d::testing::DeviceBuffer;
using ::fp8d::testing::SameBytes;

struct Shape {
  int64_t rows, cols;
};

// 1x1, below one tile, tile multiples, odd sizes across tile and 128 boundaries, a model width,
// and one with more 64x64 tiles than the tiled cast-transpose launches blocks (each loops).
const std::vector<Shape> kShapes = {{1, 1}, {7, 33}, {32, 32}, {64, 128}, {100, 300},
                                    {257, 129}, {128, 768}, {2048, 2304}};

// Normal(0, 1) with outliers that saturate E4M3 (x1000) and E5M2 (x1e6), exact zeros, and tiny
// values that flush to zero in both formats; BF16-exact so BF16 and FP32 inputs are the same
// numbers.
std::vector<float> RandomWithOutliers(size_t n, uint64_t seed) {
  Rng rng(seed);
  std::vector<float> x(n);
  for (size_t i = 0; i < n; ++i) {
    float v = static_cast<float>(rng.NextNormal());
    switch (rng.NextBelow(40)) {
      case 0: v *= 1000.f; break;
      case 1: v *= 1e6f; break;
      case 2: v = 0.f; break;
      case 3: v *= 1e-6f; break;
      default: break;
    }
    x[i] = ::fp8d::testing::RoundToBf16(v);
  }
  return x;
}

struct HostStats {
  float amax;
  uint64_t saturated, underflow, nonzero;
};

HostStats Download(const DeviceBuffer<Fp8CastStats>& stats) {
  const Fp8CastStats s = stats.Download()[0];
  return {s.amax, s.saturated, s.underflow, s.nonzero};
}

void ExpectStatsEqual(const HostStats& got, const QuantStats& want) {
  if (std::isnan(want.amax)) {
    EXPECT_TRUE(std::isnan(got.amax)) << "amax " << got.amax;
  } else {
    EXPECT_EQ(got.amax, want.amax);
  }
  EXPECT_EQ(got.saturated, static_cast<uint64_t>(want.saturated));
  EXPECT_EQ(got.underflow, static_cast<uint64_t>(want.underflow));
  EXPECT_EQ(got.nonzero, static_cast<uint64_t>(want.nonzero));
}

std::vector<uint8_t> CpuCodes(const std::vector<float>& x, float scale, Fp8Format format) {
  std::vector<uint8_t> q(x.size());
  for (size_t i = 0; i < x.size(); ++i) q[i] = FloatToFp8(x[i] * scale, format);
  return q;
}

std::vector<uint8_t> Transpose(const std::vector<uint8_t>& q, int64_t rows, int64_t cols) {
  std::vector<uint8_t> t(q.size());
  for (int64_t r = 0; r < rows; ++r) {
    for (int64_t c = 0; c < cols; ++c) t[c * rows + r] = q[r * cols + c];
  }
  return t;
}

std::string Name(Fp8Format f) { return f == Fp8Format::kE4M3 ? "E4M3" : "E5M2"; }

// Runs a launcher on BF16 or FP32 copies of the same numbers.
enum class Input { kBf16, kFp32 };

class GpuFp8CastTest : public ::fp8d::testing::GpuTest<> {};

TEST_F(GpuFp8CastTest, PerTensorBytesTransposeAmaxAndCountsMatchCpu) {
  uint64_t seed = 1;
  for (const Shape& s : kShapes) {
    for (Fp8Format format : {Fp8Format::kE4M3, Fp8Format::kE5M2}) {
      for (Input input : {Input::kBf16, Input::kFp32}) {
        for (bool transpose : {false, true}) {
          SCOPED_TRACE(::testing::Message() << s.rows << "x" << s.cols << " " << Name(format)
                                            << (input == Input::kBf16 ? " bf16" : " fp32")
                                            << (transpose ? " +transpose" : ""));
          const size_t n = static_cast<size_t>(s.rows * s.cols);
          const std::vector<float> x = RandomWithOutliers(n, seed++);
          const float scale = 0.5f;
          std::vector<float> dequant(n);
          const QuantStats want = QuantizeDequantize(x, absl::MakeSpan(dequant), format, scale);
          const std::vector<uint8_t> want_q = CpuCodes(x, scale, format);

          DeviceBuffer<float> in_f(x);
          DeviceBuffer<__nv_bfloat16> in_b(::fp8d::testing::ToBf16(x));
          DeviceBuffer<float> d_scale(std::vector<float>{scale});
          DeviceBuffer<float> scale_inv(1);
          DeviceBuffer<uint8_t> out(n), out_t(n);
          DeviceBuffer<Fp8CastStats> stats(1);
          uint8_t* t_ptr = transpose ? out_t.get() : nullptr;
          if (input == Input::kBf16) {
            CastToFp8(in_b.get(), s.rows, s.cols, format, d_scale.get(), out.get(), t_ptr,
                      scale_inv.get(), stats.get(), nullptr);
          } else {
            CastToFp8(in_f.get(), s.rows, s.cols, format, d_scale.get(), out.get(), t_ptr,
                      scale_inv.get(), stats.get(), nullptr);
          }
          FP8D_TEST_CUDA(cudaDeviceSynchronize());
          EXPECT_TRUE(SameBytes(out.Download(), want_q));
          if (transpose) {
            EXPECT_TRUE(SameBytes(out_t.Download(), Transpose(want_q, s.rows, s.cols)));
          }
          EXPECT_EQ(scale_inv.Download()[0], 1.0f / scale);
          ExpectStatsEqual(Download(stats), want);
          // The data was built to exercise every counter.
          if (n >= 1000) {
            EXPECT_GT(want.saturated, 0);
            EXPECT_GT(want.underflow, 0);
          }
        }
      }
    }
  }
}

TEST_F(GpuFp8CastTest, NanAndInfInputsGiveCpuBytesAndNanAmax) {
  std::vector<float> x = RandomWithOutliers(40 * 70, 99);
  x[5] = std::numeric_limits<float>::infinity();
  x[17] = -std::numeric_limits<float>::infinity();
  x[1234] = std::numeric_limits<float>::quiet_NaN();
  for (Fp8Format format : {Fp8Format::kE4M3, Fp8Format::kE5M2}) {
    SCOPED_TRACE(Name(format));
    std::vector<float> dequant(x.size());
    const QuantStats want = QuantizeDequantize(x, absl::MakeSpan(dequant), format, 2.f);
    DeviceBuffer<float> in(x);
    DeviceBuffer<float> d_scale(std::vector<float>{2.f});
    DeviceBuffer<uint8_t> out(x.size()), out_t(x.size());
    DeviceBuffer<Fp8CastStats> stats(1);
    CastToFp8(in.get(), 40, 70, format, d_scale.get(), out.get(), out_t.get(), nullptr,
              stats.get(), nullptr);
    FP8D_TEST_CUDA(cudaDeviceSynchronize());
    const std::vector<uint8_t> want_q = CpuCodes(x, 2.f, format);
    EXPECT_TRUE(SameBytes(out.Download(), want_q));
    EXPECT_TRUE(SameBytes(out_t.Download(), Transpose(want_q, 40, 70)));
    ASSERT_TRUE(std::isnan(want.amax));
    ExpectStatsEqual(Download(stats), want);
  }
}

TEST_F(GpuFp8CastTest, AmaxIsExactMaxMagnitude) {
  for (int64_t n : {1, 255, 256, 100000}) {
    SCOPED_TRACE(n);
    const std::vector<float> x = RandomWithOutliers(static_cast<size_t>(n), 7 + n);
    DeviceBuffer<float> in_f(x);
    DeviceBuffer<__nv_bfloat16> in_b(::fp8d::testing::ToBf16(x));
    DeviceBuffer<float> amax_f(1), amax_b(1);
    Fp8Amax(in_f.get(), n, amax_f.get(), nullptr);
    Fp8Amax(in_b.get(), n, amax_b.get(), nullptr);
    EXPECT_EQ(amax_f.Download()[0], Amax(x));
    EXPECT_EQ(amax_b.Download()[0], Amax(x));
  }
}

TEST_F(GpuFp8CastTest, CurrentScalingDerivesScaleOnDeviceAndMatchesCpu) {
  uint64_t seed = 500;
  for (const Shape& s : kShapes) {
    for (Fp8Format format : {Fp8Format::kE4M3, Fp8Format::kE5M2}) {
      for (int margin : {0, 2}) {
        SCOPED_TRACE(::testing::Message() << s.rows << "x" << s.cols << " " << Name(format)
                                          << " margin " << margin);
        const size_t n = static_cast<size_t>(s.rows * s.cols);
        const std::vector<float> x = RandomWithOutliers(n, seed++);
        const float scale = ComputeScale(Amax(x), Fp8Max(format), margin, 1.f);
        std::vector<float> dequant(n);
        const QuantStats want = QuantizeDequantize(x, absl::MakeSpan(dequant), format, scale);
        const std::vector<uint8_t> want_q = CpuCodes(x, scale, format);

        DeviceBuffer<__nv_bfloat16> in(::fp8d::testing::ToBf16(x));
        DeviceBuffer<uint8_t> out(n), out_t(n);
        DeviceBuffer<float> d_scale(1), scale_inv(1);
        DeviceBuffer<Fp8CastStats> stats(1);
        CurrentScaleCastToFp8(in.get(), s.rows, s.cols, format, margin, out.get(), out_t.get(),
                              d_scale.get(), scale_inv.get(), stats.get(), nullptr);
        FP8D_TEST_CUDA(cudaDeviceSynchronize());
        EXPECT_EQ(d_scale.Download()[0], scale);
        EXPECT_EQ(scale_inv.Download()[0], 1.0f / scale);
        EXPECT_TRUE(SameBytes(out.Download(), want_q));
        EXPECT_TRUE(SameBytes(out_t.Download(), Transpose(want_q, s.rows, s.cols)));
        ExpectStatsEqual(Download(stats), want);
      }
    }
  }
}

TEST_F(GpuFp8CastTest, CurrentScalingOfZerosKeepsScaleOne) {
  const std::vector<float> x(64 * 48, 0.f);
  DeviceBuffer<float> in(x);
  DeviceBuffer<uint8_t> out(x.size());
  DeviceBuffer<float> d_scale(1), scale_inv(1);
  DeviceBuffer<Fp8CastStats> stats(1);
  CurrentScaleCastToFp8(in.get(), 64, 48, Fp8Format::kE4M3, 0, out.get(), nullptr, d_scale.get(),
                        scale_inv.get(), stats.get(), nullptr);
  EXPECT_EQ(d_scale.Download()[0], 1.f);
  EXPECT_EQ(scale_inv.Download()[0], 1.f);
  EXPECT_TRUE(SameBytes(out.Download(), std::vector<uint8_t>(x.size(), 0)));
  const HostStats st = Download(stats);
  EXPECT_EQ(st.amax, 0.f);
  EXPECT_EQ(st.nonzero, 0u);
}

// Rows or blocks that stress the scale rule: all zeros (scale 1), a NaN (scale 1), values so
// small that fp8_max / amax overflows (FLT_MAX).
void PlantSpecialRows(std::vector<float>* x, int64_t rows, int64_t cols) {
  if (rows < 4) return;
  for (int64_t c = 0; c < cols; ++c) {
    (*x)[0 * cols + c] = 0.f;
    (*x)[2 * cols + c] = (c % 3 == 0) ? 1e-40f : 0.f;  // subnormal: 448 / 1e-40 is inf
  }
  (*x)[1 * cols + cols / 2] = std::numeric_limits<float>::quiet_NaN();
}

enum class Blocking { kRowwise, k1x128 };

void CheckBlocked(Blocking blocking) {
  uint64_t seed = blocking == Blocking::kRowwise ? 900 : 1900;
  for (const Shape& s : kShapes) {
    for (Fp8Format format : {Fp8Format::kE4M3, Fp8Format::kE5M2}) {
      for (Input input : {Input::kBf16, Input::kFp32}) {
        SCOPED_TRACE(::testing::Message() << s.rows << "x" << s.cols << " " << Name(format)
                                          << (input == Input::kBf16 ? " bf16" : " fp32"));
        const size_t n = static_cast<size_t>(s.rows * s.cols);
        std::vector<float> x = RandomWithOutliers(n, seed++);
        // BF16 cannot hold 1e-40 exactly; keep the special rows for FP32 inputs only.
        if (input == Input::kFp32) PlantSpecialRows(&x, s.rows, s.cols);
        const int block_cols = blocking == Blocking::kRowwise ? static_cast<int>(s.cols) : 128;
        std::vector<float> dequant(n);
        std::vector<float> cpu_scales;  // [row * k_blocks + kb]
        const QuantStats want = QuantizeDequantizeBlocks(
            x.data(), dequant.data(), static_cast<int>(s.rows), static_cast<int>(s.cols), 1,
            block_cols, format, &cpu_scales);
        const int64_t k_blocks = (s.cols + block_cols - 1) / block_cols;
        std::vector<uint8_t> want_q(n);
        std::vector<float> want_scales(cpu_scales.size()), want_inv(cpu_scales.size());
        for (int64_t r = 0; r < s.rows; ++r) {
          for (int64_t kb = 0; kb < k_blocks; ++kb) {
            const float scale = cpu_scales[r * k_blocks + kb];
            // cuBLASLt's VEC128 layout is k-block major; rowwise has one block per row.
            want_scales[kb * s.rows + r] = scale;
            want_inv[kb * s.rows + r] = 1.0f / scale;
            for (int64_t c = kb * block_cols; c < std::min(s.cols, (kb + 1) * block_cols); ++c) {
              want_q[r * s.cols + c] = FloatToFp8(x[r * s.cols + c] * scale, format);
            }
          }
        }

        DeviceBuffer<float> in_f(x);
        DeviceBuffer<__nv_bfloat16> in_b(::fp8d::testing::ToBf16(x));
        DeviceBuffer<uint8_t> out(n);
        DeviceBuffer<float> scales(want_scales.size()), scale_inv(want_scales.size());
        DeviceBuffer<Fp8CastStats> stats(1);
        if (blocking == Blocking::kRowwise) {
          if (input == Input::kBf16) {
            RowwiseCastToFp8(in_b.get(), s.rows, s.cols, format, out.get(), scale_inv.get(),
                             scales.get(), stats.get(), nullptr);
          } else {
            RowwiseCastToFp8(in_f.get(), s.rows, s.cols, format, out.get(), scale_inv.get(),
                             scales.get(), stats.get(), nullptr);
          }
        } else {
          ASSERT_EQ(Fp8BlockScaleCount(s.rows, s.cols), static_cast<int64_t>(want_scales.size()));
          if (input == Input::kBf16) {
            BlockwiseCastToFp8(in_b.get(), s.rows, s.cols, format, out.get(), scale_inv.get(),
                               scales.get(), stats.get(), nullptr);
          } else {
            BlockwiseCastToFp8(in_f.get(), s.rows, s.cols, format, out.get(), scale_inv.get(),
                               scales.get(), stats.get(), nullptr);
          }
        }
        FP8D_TEST_CUDA(cudaDeviceSynchronize());
        EXPECT_TRUE(SameBytes(scales.Download(), want_scales));
        EXPECT_TRUE(SameBytes(scale_inv.Download(), want_inv));
        EXPECT_TRUE(SameBytes(out.Download(), want_q));
        ExpectStatsEqual(Download(stats), want);
      }
    }
  }
}

TEST_F(GpuFp8CastTest, RowwiseScalesBytesAndCountsMatchCpuBlocks) { CheckBlocked(Blocking::kRowwise); }

TEST_F(GpuFp8CastTest, Blockwise1x128ScalesInCublasLayoutAndBytesMatchCpuBlocks) {
  CheckBlocked(Blocking::k1x128);
}

// X^T quantized along its rows (X's columns): the CPU quantizes the explicit transpose with
// core's blocks, the GPU never materialises it.
void CheckTransposedBlocked(Blocking blocking) {
  uint64_t seed = blocking == Blocking::kRowwise ? 2900 : 3900;
  // Also rows spanning several 128-row amax tiles and a partial last block.
  std::vector<Shape> shapes = kShapes;
  shapes.push_back({300, 70});
  for (const Shape& s : shapes) {
    for (Fp8Format format : {Fp8Format::kE4M3, Fp8Format::kE5M2}) {
      for (Input input : {Input::kBf16, Input::kFp32}) {
        SCOPED_TRACE(::testing::Message() << s.rows << "x" << s.cols << " " << Name(format)
                                          << (input == Input::kBf16 ? " bf16" : " fp32"));
        const size_t n = static_cast<size_t>(s.rows * s.cols);
        std::vector<float> x = RandomWithOutliers(n, seed++);
        std::vector<float> xt(n);
        for (int64_t r = 0; r < s.rows; ++r) {
          for (int64_t c = 0; c < s.cols; ++c) xt[c * s.rows + r] = x[r * s.cols + c];
        }
        if (input == Input::kFp32 && s.cols >= 4) {
          // Column 0 of X = row 0 of X^T all zero; column 1 gets a NaN; column 2 subnormal.
          for (int64_t r = 0; r < s.rows; ++r) {
            xt[0 * s.rows + r] = 0.f;
            xt[2 * s.rows + r] = (r % 3 == 0) ? 1e-40f : 0.f;
          }
          xt[1 * s.rows + s.rows / 2] = std::numeric_limits<float>::quiet_NaN();
          for (int64_t r = 0; r < s.rows; ++r) {
            for (int64_t c = 0; c < s.cols; ++c) {
              x[r * s.cols + c] = xt[c * s.rows + r];
            }
          }
        }
        const int block_cols = blocking == Blocking::kRowwise ? static_cast<int>(s.rows) : 128;
        std::vector<float> dequant(n);
        std::vector<float> cpu_scales;  // [c * k_blocks + kb]
        const QuantStats want = QuantizeDequantizeBlocks(
            xt.data(), dequant.data(), static_cast<int>(s.cols), static_cast<int>(s.rows), 1,
            block_cols, format, &cpu_scales);
        const int64_t k_blocks = (s.rows + block_cols - 1) / block_cols;
        std::vector<uint8_t> want_q(n);
        std::vector<float> want_scales(cpu_scales.size()), want_inv(cpu_scales.size());
        for (int64_t c = 0; c < s.cols; ++c) {
          for (int64_t kb = 0; kb < k_blocks; ++kb) {
            const float scale = cpu_scales[c * k_blocks + kb];
            want_scales[kb * s.cols + c] = scale;
            want_inv[kb * s.cols + c] = 1.0f / scale;
            for (int64_t r = kb * block_cols; r < std::min(s.rows, (kb + 1) * block_cols); ++r) {
              want_q[c * s.rows + r] = FloatToFp8(xt[c * s.rows + r] * scale, format);
            }
          }
        }

        DeviceBuffer<float> in_f(x);
        DeviceBuffer<__nv_bfloat16> in_b(::fp8d::testing::ToBf16(x));
        DeviceBuffer<uint8_t> out_t(n);
        DeviceBuffer<float> scales(want_scales.size()), scale_inv(want_scales.size());
        DeviceBuffer<Fp8CastStats> stats(1);
        if (blocking == Blocking::kRowwise) {
          if (input == Input::kBf16) {
            TransposedRowwiseCastToFp8(in_b.get(), s.rows, s.cols, format, out_t.get(),
                                       scale_inv.get(), scales.get(), stats.get(), nullptr);
          } else {
            TransposedRowwiseCastToFp8(in_f.get(), s.rows, s.cols, format, out_t.get(),
                                       scale_inv.get(), scales.get(), stats.get(), nullptr);
          }
        } else {
          ASSERT_EQ(Fp8BlockScaleCount(s.cols, s.rows), static_cast<int64_t>(want_scales.size()));
          if (input == Input::kBf16) {
            TransposedBlockwiseCastToFp8(in_b.get(), s.rows, s.cols, format, out_t.get(),
                                         scale_inv.get(), scales.get(), stats.get(), nullptr);
          } else {
            TransposedBlockwiseCastToFp8(in_f.get(), s.rows, s.cols, format, out_t.get(),
                                         scale_inv.get(), scales.get(), stats.get(), nullptr);
          }
        }
        FP8D_TEST_CUDA(cudaDeviceSynchronize());
        EXPECT_TRUE(SameBytes(scales.Download(), want_scales));
        EXPECT_TRUE(SameBytes(scale_inv.Download(), want_inv));
        EXPECT_TRUE(SameBytes(out_t.Download(), want_q));
        ExpectStatsEqual(Download(stats), want);
      }
    }
  }
}

TEST_F(GpuFp8CastTest, TransposedRowwiseQuantizesColumnsLikeCpuOnTranspose) {
  CheckTransposedBlocked(Blocking::kRowwise);
}

TEST_F(GpuFp8CastTest, TransposedBlockwiseQuantizes128RowBlocksLikeCpuOnTranspose) {
  CheckTransposedBlocked(Blocking::k1x128);
}

}  // namespace
}  // namespace fp8d::kernels
