// FP8 cuBLASLt GEMMs against a CPU product of the dequantized operands: the operands are
// quantized on the host with core's emulation (core/fp8_quantize.h), so the GPU and the CPU
// multiply the same FP8 values and differ only by accumulation order and the output rounding.
// Rows and 128-blocks get different magnitudes, so a scale applied to the wrong row or block
// (a layout mistake) changes the product far beyond the tolerance.
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "core/fp8_format.h"
#include "core/fp8_quantize.h"
#include "core/fp8_scaling.h"
#include "core/rng.h"
#include "gtest/gtest.h"
#include "kernels/fp8_cast.cuh"
#include "kernels/gemm.h"
#include "kernels/gemm_fp8.h"
#include "tests/gpu/gpu_test_util.h"

namespace fp8d::kernels {
namespace {

using ::fp8d::testing::DeviceBuffer;

// Fails the test with the status (the cuBLASLt reason) when a GEMM call is refused.
#define FP8D_ASSERT_OK(expr)                 \
  do {                                       \
    const absl::Status fp8d_st_ = (expr);    \
    ASSERT_TRUE(fp8d_st_.ok()) << fp8d_st_;  \
  } while (0)

// Rounding of BF16 output plus FP32 (or Hopper's fast) accumulation over up to a few thousand
// terms; the absolute part covers outputs near zero from cancelling sums.
constexpr float kRelTol = 1e-2f;
constexpr float kAbsTolFraction = 2e-3f;

struct Quantized {
  std::vector<uint8_t> codes;      // [rows, cols]
  std::vector<float> dequant;      // what the codes mean, [rows, cols]
  std::vector<float> scale_inv;    // in the layout cuBLASLt reads for the mode
};

// Normal values whose magnitude changes by row and by 128-column block (factors 2^-6 .. 2^6).
std::vector<float> RandomVaried(int64_t rows, int64_t cols, uint64_t seed) {
  Rng rng(seed);
  std::vector<float> x(static_cast<size_t>(rows * cols));
  for (int64_t r = 0; r < rows; ++r) {
    for (int64_t c = 0; c < cols; ++c) {
      const int e = static_cast<int>((r * 7 + (c / 128) * 3) % 13) - 6;
      x[r * cols + c] = ::fp8d::testing::RoundToBf16(
          static_cast<float>(rng.NextNormal()) * std::ldexp(1.f, e));
    }
  }
  return x;
}

Quantized Quantize(const std::vector<float>& x, int64_t rows, int64_t cols, Fp8Format format,
                   Fp8ScaleMode mode) {
  Quantized q;
  q.codes.resize(x.size());
  q.dequant.resize(x.size());
  if (mode == Fp8ScaleMode::kTensor) {
    const float scale = ComputeScale(Amax(x), Fp8Max(format), 0, 1.f);
    QuantizeDequantize(x, absl::MakeSpan(q.dequant), format, scale);
    for (size_t i = 0; i < x.size(); ++i) q.codes[i] = FloatToFp8(x[i] * scale, format);
    q.scale_inv = {1.0f / scale};
    return q;
  }
  const int block_cols = mode == Fp8ScaleMode::kRowwise ? static_cast<int>(cols) : 128;
  const int64_t k_blocks = (cols + block_cols - 1) / block_cols;
  std::vector<float> scales;  // [row * k_blocks + kb]
  QuantizeDequantizeBlocks(x.data(), q.dequant.data(), static_cast<int>(rows),
                           static_cast<int>(cols), 1, block_cols, format, &scales);
  q.scale_inv.resize(scales.size());
  for (int64_t r = 0; r < rows; ++r) {
    for (int64_t kb = 0; kb < k_blocks; ++kb) {
      const float scale = scales[r * k_blocks + kb];
      q.scale_inv[kb * rows + r] = 1.0f / scale;  // k-block major (rowwise: one block)
      for (int64_t c = kb * block_cols; c < std::min(cols, (kb + 1) * block_cols); ++c) {
        q.codes[r * cols + c] = FloatToFp8(x[r * cols + c] * scale, format);
      }
    }
  }
  return q;
}

// Y[m, n] = X[m, k] * W[n, k]^T in double.
std::vector<float> CpuProduct(const std::vector<float>& x, const std::vector<float>& w, int64_t m,
                              int64_t n, int64_t k) {
  std::vector<float> y(static_cast<size_t>(m * n));
  for (int64_t i = 0; i < m; ++i) {
    const float* xr = &x[i * k];
    for (int64_t j = 0; j < n; ++j) {
      const float* wr = &w[j * k];
      double acc = 0;
      for (int64_t p = 0; p < k; ++p) acc += static_cast<double>(xr[p]) * wr[p];
      y[i * n + j] = static_cast<float>(acc);
    }
  }
  return y;
}

cudaDataType_t LtType(Fp8Format f) {
  return f == Fp8Format::kE4M3 ? CUDA_R_8F_E4M3 : CUDA_R_8F_E5M2;
}

const char* ModeName(Fp8ScaleMode m) {
  switch (m) {
    case Fp8ScaleMode::kTensor: return "tensor";
    case Fp8ScaleMode::kRowwise: return "rowwise";
    case Fp8ScaleMode::kBlock1x128: return "1x128";
  }
  return "?";
}

class GpuFp8GemmTest : public ::fp8d::testing::GpuTest<> {
 protected:
  void SetUp() override {
    ::fp8d::testing::GpuTest<>::SetUp();
    if (IsSkipped()) return;
    workspace_ = std::make_unique<DeviceBuffer<uint8_t>>(kGemmWorkspaceBytes);
    auto runner = Fp8GemmRunner::Create(workspace_->get(), kGemmWorkspaceBytes);
    ASSERT_TRUE(runner.ok()) << runner.status();
    runner_ = std::move(*runner);
  }

  // Quantizes X and W on the host, runs the GEMM, compares with the CPU product.
  void Check(const GemmShape& s, Fp8Format x_format, Fp8Format w_format, Fp8ScaleMode mode,
             cudaDataType_t out_type, bool fast_accum, uint64_t seed) {
    SCOPED_TRACE(::testing::Message() << "m=" << s.m << " n=" << s.n << " k=" << s.k << " "
                                      << ModeName(mode) << (fast_accum ? " fast" : "")
                                      << (out_type == CUDA_R_32F ? " fp32 out" : " bf16 out"));
    const std::vector<float> x = RandomVaried(s.m, s.k, seed);
    const std::vector<float> w = RandomVaried(s.n, s.k, seed + 1);
    const Quantized qx = Quantize(x, s.m, s.k, x_format, mode);
    const Quantized qw = Quantize(w, s.n, s.k, w_format, mode);
    const std::vector<float> want = CpuProduct(qx.dequant, qw.dequant, s.m, s.n, s.k);

    DeviceBuffer<uint8_t> dx(qx.codes), dw(qw.codes);
    DeviceBuffer<float> sx(qx.scale_inv), sw(qw.scale_inv);
    Fp8GemmConfig config;
    config.x_type = LtType(x_format);
    config.w_type = LtType(w_format);
    config.out_type = out_type;
    config.scale_mode = mode;
    config.x_scale_inv = sx.get();
    config.w_scale_inv = sw.get();
    config.fast_accum = fast_accum;
    std::vector<float> got;
    if (out_type == CUDA_R_16BF) {
      DeviceBuffer<__nv_bfloat16> y(static_cast<size_t>(s.m * s.n));
      FP8D_ASSERT_OK(runner_->Run(config, s, dx.get(), dw.get(), y.get(), nullptr));
      got = ::fp8d::testing::ToFloat(y.Download());
    } else {
      DeviceBuffer<float> y(static_cast<size_t>(s.m * s.n));
      FP8D_ASSERT_OK(runner_->Run(config, s, dx.get(), dw.get(), y.get(), nullptr));
      got = y.Download();
    }
    EXPECT_TRUE(::fp8d::testing::AllClose(got, want, kRelTol, kAbsTolFraction));
  }

  std::unique_ptr<DeviceBuffer<uint8_t>> workspace_;
  std::unique_ptr<Fp8GemmRunner> runner_;
};

// Small shapes, an m that is not a multiple of 16, and the model's shapes: 124m QKV
// (768 -> 2304) and 1b MLP up (2048 -> 8192) with few tokens.
const std::vector<GemmShape> kShapes = {
    {16, 64, 128}, {40, 256, 512}, {256, 2304, 768}, {32, 8192, 2048}};

TEST_F(GpuFp8GemmTest, PerTensorE4M3MatchesDequantizedCpuProduct) {
  uint64_t seed = 10;
  for (const GemmShape& s : kShapes) {
    Check(s, Fp8Format::kE4M3, Fp8Format::kE4M3, Fp8ScaleMode::kTensor, CUDA_R_16BF,
          /*fast_accum=*/true, seed += 2);
    Check(s, Fp8Format::kE4M3, Fp8Format::kE4M3, Fp8ScaleMode::kTensor, CUDA_R_16BF,
          /*fast_accum=*/false, seed += 2);
  }
}

TEST_F(GpuFp8GemmTest, HybridE5M2GradientTimesE4M3MatchesCpu) {
  Check({64, 768, 256}, Fp8Format::kE5M2, Fp8Format::kE4M3, Fp8ScaleMode::kTensor, CUDA_R_16BF,
        false, 100);
  Check({64, 768, 256}, Fp8Format::kE4M3, Fp8Format::kE5M2, Fp8ScaleMode::kTensor, CUDA_R_16BF,
        false, 102);
}

TEST_F(GpuFp8GemmTest, Fp32OutputMatchesCpu) {
  Check({128, 768, 768}, Fp8Format::kE4M3, Fp8Format::kE4M3, Fp8ScaleMode::kTensor, CUDA_R_32F,
        false, 200);
}

TEST_F(GpuFp8GemmTest, RowwiseScalesMatchCpu) {
  uint64_t seed = 300;
  for (const GemmShape& s : kShapes) {
    Check(s, Fp8Format::kE4M3, Fp8Format::kE4M3, Fp8ScaleMode::kRowwise, CUDA_R_16BF, false,
          seed += 2);
  }
}

TEST_F(GpuFp8GemmTest, Blockwise1x128ScalesMatchCpu) {
  uint64_t seed = 400;
  for (const GemmShape& s : kShapes) {
    Check(s, Fp8Format::kE4M3, Fp8Format::kE4M3, Fp8ScaleMode::kBlock1x128, CUDA_R_16BF, false,
          seed += 2);
  }
}

TEST_F(GpuFp8GemmTest, AccumulateAddsProductToFp32Output) {
  const GemmShape s{64, 256, 512};
  const std::vector<float> x = RandomVaried(s.m, s.k, 500);
  const std::vector<float> w = RandomVaried(s.n, s.k, 501);
  const Quantized qx = Quantize(x, s.m, s.k, Fp8Format::kE5M2, Fp8ScaleMode::kTensor);
  const Quantized qw = Quantize(w, s.n, s.k, Fp8Format::kE4M3, Fp8ScaleMode::kTensor);
  const std::vector<float> product = CpuProduct(qx.dequant, qw.dequant, s.m, s.n, s.k);
  const std::vector<float> c = ::fp8d::testing::RandomNormal(product.size(), 502, 10.f);
  std::vector<float> want(product.size());
  for (size_t i = 0; i < want.size(); ++i) want[i] = c[i] + 2.f * product[i];

  DeviceBuffer<uint8_t> dx(qx.codes), dw(qw.codes);
  DeviceBuffer<float> sx(qx.scale_inv), sw(qw.scale_inv);
  DeviceBuffer<float> y(c);
  Fp8GemmConfig config;
  config.x_type = CUDA_R_8F_E5M2;
  config.out_type = CUDA_R_32F;
  config.x_scale_inv = sx.get();
  config.w_scale_inv = sw.get();
  config.accumulate = true;
  // Two micro-batches summing into one FP32 weight gradient.
  FP8D_ASSERT_OK(runner_->Run(config, s, dx.get(), dw.get(), y.get(), nullptr));
  FP8D_ASSERT_OK(runner_->Run(config, s, dx.get(), dw.get(), y.get(), nullptr));
  EXPECT_TRUE(::fp8d::testing::AllClose(y.Download(), want, 1e-3f, 1e-4f));
}

TEST_F(GpuFp8GemmTest, CastKernelsFeedGemmBlockwise) {
  // End to end on the device: BF16 activations and weights quantized by the 1x128 cast kernel
  // (scales straight into the cuBLASLt layout), then the GEMM.
  const GemmShape s{128, 768, 768};
  const std::vector<float> x = RandomVaried(s.m, s.k, 600);
  const std::vector<float> w = RandomVaried(s.n, s.k, 601);
  const Quantized qx = Quantize(x, s.m, s.k, Fp8Format::kE4M3, Fp8ScaleMode::kBlock1x128);
  const Quantized qw = Quantize(w, s.n, s.k, Fp8Format::kE4M3, Fp8ScaleMode::kBlock1x128);
  const std::vector<float> want = CpuProduct(qx.dequant, qw.dequant, s.m, s.n, s.k);

  DeviceBuffer<__nv_bfloat16> bx(::fp8d::testing::ToBf16(x)), bw(::fp8d::testing::ToBf16(w));
  DeviceBuffer<uint8_t> dx(x.size()), dw(w.size());
  DeviceBuffer<float> sx(Fp8BlockScaleCount(s.m, s.k)), sw(Fp8BlockScaleCount(s.n, s.k));
  BlockwiseCastToFp8(bx.get(), s.m, s.k, Fp8Format::kE4M3, dx.get(), sx.get(), nullptr, nullptr,
                     nullptr);
  BlockwiseCastToFp8(bw.get(), s.n, s.k, Fp8Format::kE4M3, dw.get(), sw.get(), nullptr, nullptr,
                     nullptr);
  Fp8GemmConfig config;
  config.scale_mode = Fp8ScaleMode::kBlock1x128;
  config.x_scale_inv = sx.get();
  config.w_scale_inv = sw.get();
  DeviceBuffer<__nv_bfloat16> y(static_cast<size_t>(s.m * s.n));
  FP8D_ASSERT_OK(runner_->Run(config, s, dx.get(), dw.get(), y.get(), nullptr));
  EXPECT_TRUE(::fp8d::testing::AllClose(::fp8d::testing::ToFloat(y.Download()), want, kRelTol,
                                        kAbsTolFraction));
}

TEST_F(GpuFp8GemmTest, PlansAreCachedPerDescriptor) {
  const GemmShape s{32, 128, 128};
  DeviceBuffer<uint8_t> x(s.m * s.k), w(s.n * s.k);
  FP8D_TEST_CUDA(cudaMemset(x.get(), 0, x.bytes()));
  FP8D_TEST_CUDA(cudaMemset(w.get(), 0, w.bytes()));
  DeviceBuffer<float> one(std::vector<float>{1.f});
  DeviceBuffer<__nv_bfloat16> y(s.m * s.n);
  Fp8GemmConfig config;
  config.x_scale_inv = one.get();
  config.w_scale_inv = one.get();
  FP8D_ASSERT_OK(runner_->Run(config, s, x.get(), w.get(), y.get(), nullptr));
  FP8D_ASSERT_OK(runner_->Run(config, s, x.get(), w.get(), y.get(), nullptr));
  EXPECT_EQ(runner_->cached_plans(), 1u);
  config.fast_accum = true;
  FP8D_ASSERT_OK(runner_->Run(config, s, x.get(), w.get(), y.get(), nullptr));
  EXPECT_EQ(runner_->cached_plans(), 2u);
  // Zero codes times any scale: the output is exactly zero (and was written over the poison).
  for (float v : ::fp8d::testing::ToFloat(y.Download())) ASSERT_EQ(v, 0.f);
}

TEST_F(GpuFp8GemmTest, RejectsUnsupportedInputsWithInvalidArgument) {
  DeviceBuffer<uint8_t> x(64 * 64), w(64 * 64);
  DeviceBuffer<float> one(std::vector<float>{1.f});
  DeviceBuffer<float> y(64 * 64);
  Fp8GemmConfig ok;
  ok.x_scale_inv = one.get();
  ok.w_scale_inv = one.get();

  auto run = [&](const Fp8GemmConfig& config, const GemmShape& shape) {
    return runner_->Run(config, shape, x.get(), w.get(), y.get(), nullptr);
  };

  Fp8GemmConfig both_e5m2 = ok;
  both_e5m2.x_type = both_e5m2.w_type = CUDA_R_8F_E5M2;
  const absl::Status e5m2 = run(both_e5m2, {64, 64, 64});
  EXPECT_EQ(e5m2.code(), absl::StatusCode::kInvalidArgument) << e5m2;
  EXPECT_NE(e5m2.message().find("E5M2"), std::string::npos) << e5m2;

  const absl::Status odd_k = run(ok, {64, 64, 40});
  EXPECT_EQ(odd_k.code(), absl::StatusCode::kInvalidArgument) << odd_k;
  EXPECT_NE(odd_k.message().find("k=40"), std::string::npos) << odd_k;

  Fp8GemmConfig bf16_in = ok;
  bf16_in.x_type = CUDA_R_16BF;
  const absl::Status bf16 = run(bf16_in, {64, 64, 64});
  EXPECT_EQ(bf16.code(), absl::StatusCode::kInvalidArgument) << bf16;

  Fp8GemmConfig no_scale = ok;
  no_scale.w_scale_inv = nullptr;
  const absl::Status unscaled = run(no_scale, {64, 64, 64});
  EXPECT_EQ(unscaled.code(), absl::StatusCode::kInvalidArgument) << unscaled;
  EXPECT_EQ(runner_->cached_plans(), 0u);
}

}  // namespace
}  // namespace fp8d::kernels
