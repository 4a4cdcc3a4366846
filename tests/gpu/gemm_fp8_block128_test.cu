// Which scale-array layout cuBLASLt's BLK128x128_32F reads for 128x128 weight tiles on Hopper,
// decided by experiment: the weight W [n, k] is cast on the device by Block128x128CastToFp8 into
// each candidate layout, the FP8 GEMM Y = X W^T runs with W's tiles in BLK128x128_32F and X's
// 1x128 blocks in VEC128_32F (Fp8ScaleMode::kBlock128x128), and every result is compared with the
// CPU product of the operands dequantized by core's emulation. The candidates:
//   tile-row-major [n/128][k/128], packed or with the row of tiles padded to a multiple of 4;
//   tile-col-major [k/128][n/128], packed or padded to a multiple of 4.
// The shapes have tile grids (3 x 2, 2 x 5) on which the four index maps all differ, the padding
// entries of the scale arrays hold NaN (a layout that reads them yields NaN), and every tile of
// W has its own magnitude (2^e, a distinct e per tile), hence its own scale, so a scale taken
// from the wrong tile is off by a factor of about 2 or more.
//
// To make one misplaced tile visible however small its values, each row of X is nonzero in one
// 128-block of k only (row i in block i mod k/128): every output element is then the product of
// exactly one W tile with one X block, and the error is measured per (W tile, X block) pair,
// relative to the largest expected value of that pair.
//
// The test prints each candidate's error and passes iff exactly kCublasLtTileScaleLayout (the
// documented "K-major, stride a multiple of 4" reading) matches on every shape. If cuBLASLt
// refuses the mode, it fails with the cuBLASLt status.
#include <cublasLt.h>
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <limits>
#include <memory>
#include <string>
#include <vector>

#include "core/fp8_format.h"
#include "core/fp8_quantize.h"
#include "core/rng.h"
#include "gtest/gtest.h"
#include "kernels/fp8_block128.cuh"
#include "kernels/fp8_cast.cuh"
#include "kernels/gemm.h"
#include "kernels/gemm_fp8.h"
#include "tests/gpu/gpu_test_util.h"

namespace fp8d::kernels {
namespace {

using ::fp8d::testing::DeviceBuffer;

// A layout matches when every (tile, block) pair of the output is within this of the CPU
// product, relative to the pair's largest value: BF16 output rounding (2^-9) and FP32
// accumulation order stay far below it, while a scale from the wrong tile (a factor of about 2)
// or a NaN padding entry is far above it.
constexpr double kLayoutMatchTol = 1e-2;
// Dense operands (every block of X nonzero), as in gemm_fp8_test.cu.
constexpr float kDenseRelTol = 1e-2f;
constexpr float kDenseAbsTolFraction = 2e-3f;

struct Candidate {
  const char* name;
  Fp8TileScaleLayout layout;
};

const Candidate kCandidates[] = {
    {"tile-row-major [n/128][k/128] packed", {Fp8TileOrder::kTileRowMajor, 1}},
    {"tile-row-major [n/128][k/128] stride padded to 4", {Fp8TileOrder::kTileRowMajor, 4}},
    {"tile-col-major [k/128][n/128] packed", {Fp8TileOrder::kTileColMajor, 1}},
    {"tile-col-major [k/128][n/128] stride padded to 4", {Fp8TileOrder::kTileColMajor, 4}},
};

bool SameLayout(Fp8TileScaleLayout a, Fp8TileScaleLayout b) {
  return a.order == b.order && a.stride_multiple == b.stride_multiple;
}

// Floats that cover every candidate's array for a [rows, cols] weight.
int64_t ScaleArrayFloats(int64_t rows, int64_t cols) {
  int64_t most = 0;
  for (const Candidate& c : kCandidates) {
    most = std::max(most, Fp8TileScaleCount(c.layout, rows, cols));
  }
  return most;
}

// True when the two layouts put some tile's scale in different places for this shape.
bool Distinguishable(Fp8TileScaleLayout a, Fp8TileScaleLayout b, int64_t rows, int64_t cols) {
  for (int64_t tr = 0; tr < Fp8TileCount(rows); ++tr) {
    for (int64_t tc = 0; tc < Fp8TileCount(cols); ++tc) {
      if (Fp8TileScaleIndex(a, rows, cols, tr, tc) != Fp8TileScaleIndex(b, rows, cols, tr, tc)) {
        return true;
      }
    }
  }
  return false;
}

// W [n, k]: normal values times 2^e per 128x128 tile, e = tile index - tiles / 2 (distinct per
// tile), or with `exponent_cycle` > 0, e = tile index mod cycle - cycle / 2 (a milder spread for
// the dense check). Rounded to BF16 so the values are exact in either input type.
std::vector<float> TiledWeight(int64_t n, int64_t k, uint64_t seed, int exponent_cycle) {
  Rng rng(seed);
  const int64_t tile_cols = Fp8TileCount(k), tiles = Fp8TileCount(n) * tile_cols;
  std::vector<float> w(static_cast<size_t>(n * k));
  for (int64_t r = 0; r < n; ++r) {
    for (int64_t c = 0; c < k; ++c) {
      const int64_t t = (r / kFp8TileDim) * tile_cols + c / kFp8TileDim;
      const int64_t e = exponent_cycle > 0 ? t % exponent_cycle - exponent_cycle / 2 : t - tiles / 2;
      w[r * k + c] = ::fp8d::testing::RoundToBf16(static_cast<float>(rng.NextNormal()) *
                                                  std::ldexp(1.f, static_cast<int>(e)));
    }
  }
  return w;
}

// X [m, k] whose row i is nonzero only in the 128-block i mod (k / 128).
std::vector<float> OneBlockPerRowActivations(int64_t m, int64_t k, uint64_t seed) {
  Rng rng(seed);
  const int64_t k_blocks = Fp8KBlocks(k);
  std::vector<float> x(static_cast<size_t>(m * k), 0.f);
  for (int64_t i = 0; i < m; ++i) {
    const int64_t kb = i % k_blocks;
    for (int64_t c = kb * kFp8BlockCols; c < std::min(k, (kb + 1) * kFp8BlockCols); ++c) {
      x[i * k + c] = ::fp8d::testing::RoundToBf16(static_cast<float>(rng.NextNormal()));
    }
  }
  return x;
}

// Dense X [m, k] with magnitudes varying by row and 128-block.
std::vector<float> DenseActivations(int64_t m, int64_t k, uint64_t seed) {
  Rng rng(seed);
  std::vector<float> x(static_cast<size_t>(m * k));
  for (int64_t r = 0; r < m; ++r) {
    for (int64_t c = 0; c < k; ++c) {
      const int e = static_cast<int>((r * 5 + (c / 128) * 3) % 9) - 4;
      x[r * k + c] = ::fp8d::testing::RoundToBf16(static_cast<float>(rng.NextNormal()) *
                                                  std::ldexp(1.f, e));
    }
  }
  return x;
}

// Core's emulation: what the FP8 codes mean, with blocks of block_rows x block_cols.
std::vector<float> Dequantized(const std::vector<float>& x, int64_t rows, int64_t cols,
                               int block_rows, int block_cols, std::vector<float>* scales) {
  std::vector<float> out(x.size());
  std::vector<float> local;
  QuantizeDequantizeBlocks(x.data(), out.data(), static_cast<int>(rows), static_cast<int>(cols),
                           block_rows, block_cols, Fp8Format::kE4M3,
                           scales != nullptr ? scales : &local);
  return out;
}

// Y[m, n] = X[m, k] * W[n, k]^T in double.
std::vector<float> CpuProduct(const std::vector<float>& x, const std::vector<float>& w, int64_t m,
                              int64_t n, int64_t k) {
  std::vector<float> y(static_cast<size_t>(m * n));
  for (int64_t i = 0; i < m; ++i) {
    for (int64_t j = 0; j < n; ++j) {
      double acc = 0;
      for (int64_t p = 0; p < k; ++p) acc += static_cast<double>(x[i * k + p]) * w[j * k + p];
      y[i * n + j] = static_cast<float>(acc);
    }
  }
  return y;
}

// For one-block-per-row X: the largest |got - want| over each (W tile row, X block) pair's
// outputs relative to that pair's largest |want|, maximised over pairs. NaN anywhere: infinity.
double WorstPairError(const std::vector<float>& got, const std::vector<float>& want, int64_t m,
                      int64_t n, int64_t k) {
  const int64_t k_blocks = Fp8KBlocks(k), tile_rows = Fp8TileCount(n);
  std::vector<double> err(static_cast<size_t>(tile_rows * k_blocks), 0.0);
  std::vector<double> peak(err.size(), 0.0);
  for (int64_t i = 0; i < m; ++i) {
    for (int64_t j = 0; j < n; ++j) {
      const float g = got[i * n + j], w = want[i * n + j];
      if (std::isnan(g)) return std::numeric_limits<double>::infinity();
      const size_t pair = static_cast<size_t>((j / kFp8TileDim) * k_blocks + i % k_blocks);
      err[pair] = std::max(err[pair], std::fabs(static_cast<double>(g) - w));
      peak[pair] = std::max(peak[pair], std::fabs(static_cast<double>(w)));
    }
  }
  double worst = 0;
  for (size_t p = 0; p < err.size(); ++p) {
    if (peak[p] > 0) worst = std::max(worst, err[p] / peak[p]);
  }
  return worst;
}

struct Shape {
  int64_t m, n, k;
};

// Non-square tile grids (3 x 2 and 2 x 5 tiles of W) at two token counts.
const Shape kLayoutShapes[] = {{128, 384, 256}, {256, 384, 256}, {128, 256, 640}, {256, 256, 640}};

// Host arithmetic of the layouts (runs without a GPU): positions and sizes for a 3 x 2 tile grid,
// and every pair of candidates placing some tile differently on each shape the GPU test uses,
// so its verdict can single out one layout.
TEST(Fp8TileScaleLayoutTest, CandidatesPlaceTilesDifferentlyOnTheLayoutShapes) {
  const Fp8TileScaleLayout row_padded{Fp8TileOrder::kTileRowMajor, 4};
  const Fp8TileScaleLayout col_packed{Fp8TileOrder::kTileColMajor, 1};
  EXPECT_EQ(Fp8TileScaleStride(row_padded, 384, 256), 4);
  EXPECT_EQ(Fp8TileScaleCount(row_padded, 384, 256), 12);
  EXPECT_EQ(Fp8TileScaleIndex(row_padded, 384, 256, 2, 1), 9);
  EXPECT_EQ(Fp8TileScaleStride(col_packed, 384, 256), 3);
  EXPECT_EQ(Fp8TileScaleCount(col_packed, 384, 256), 6);
  EXPECT_EQ(Fp8TileScaleIndex(col_packed, 384, 256, 2, 1), 5);
  // Partial edge tiles count as tiles: 200 x 300 is 2 x 3 tiles.
  EXPECT_EQ(Fp8TileScaleCount(row_padded, 200, 300), 8);
  EXPECT_EQ(ScaleArrayFloats(384, 256), 12);
  for (const Shape& s : kLayoutShapes) {
    for (const Candidate& a : kCandidates) {
      for (const Candidate& b : kCandidates) {
        if (&a != &b) {
          EXPECT_TRUE(Distinguishable(a.layout, b.layout, s.n, s.k))
              << a.name << " vs " << b.name << " at n=" << s.n << " k=" << s.k;
        }
      }
    }
  }
}

class GpuFp8Block128GemmTest : public ::fp8d::testing::GpuTest<> {
 protected:
  void SetUp() override {
    ::fp8d::testing::GpuTest<>::SetUp();
    if (IsSkipped()) return;
    workspace_ = std::make_unique<DeviceBuffer<uint8_t>>(kGemmWorkspaceBytes);
    auto runner = Fp8GemmRunner::Create(workspace_->get(), kGemmWorkspaceBytes);
    ASSERT_TRUE(runner.ok()) << runner.status();
    runner_ = std::move(*runner);
  }

  // Casts x [m, k] (1x128) and w [n, k] (128x128 tiles in `layout`) on the device and runs the
  // kBlock128x128 GEMM; the BF16 output as floats, or the runner's status.
  absl::StatusOr<std::vector<float>> RunGemm(const Shape& s, const std::vector<float>& x,
                                             const std::vector<float>& w,
                                             Fp8TileScaleLayout layout) {
    DeviceBuffer<float> hx(x), hw(w);
    DeviceBuffer<uint8_t> qx(x.size()), qw(w.size());
    // Every candidate's array size, NaN-poisoned: entries a layout leaves out stay NaN.
    DeviceBuffer<float> sx(Fp8BlockScaleCount(s.m, s.k)), sw(ScaleArrayFloats(s.n, s.k));
    // m is a multiple of 4 here, so the packed 1x128 layout is also the padded one.
    BlockwiseCastToFp8(hx.get(), s.m, s.k, Fp8Format::kE4M3, qx.get(), sx.get(), nullptr,
                       nullptr, nullptr);
    Block128x128CastToFp8(hw.get(), s.n, s.k, Fp8Format::kE4M3, layout, qw.get(), sw.get(),
                          nullptr, nullptr);
    Fp8GemmConfig config;
    config.scale_mode = Fp8ScaleMode::kBlock128x128;
    config.x_scale_inv = sx.get();
    config.w_scale_inv = sw.get();
    DeviceBuffer<__nv_bfloat16> y(static_cast<size_t>(s.m * s.n));
    const absl::Status st =
        runner_->Run(config, {s.m, s.n, s.k}, qx.get(), qw.get(), y.get(), nullptr);
    if (!st.ok()) return st;
    return ::fp8d::testing::ToFloat(y.Download());
  }

  std::unique_ptr<DeviceBuffer<uint8_t>> workspace_;
  std::unique_ptr<Fp8GemmRunner> runner_;
};

TEST_F(GpuFp8Block128GemmTest, CublasLtReadsTileRowMajorScalesWithStridePaddedToFour) {
  std::printf("cuBLASLt %zu: W BLK128x128_32F x X VEC128_32F, scale layouts (expected: %s)\n",
              cublasLtGetVersion(), "tile-row-major [n/128][k/128] stride padded to 4");
  uint64_t seed = 7000;
  for (const Shape& s : kLayoutShapes) {
    SCOPED_TRACE(::testing::Message() << "m=" << s.m << " n=" << s.n << " k=" << s.k);
    const std::vector<float> x = OneBlockPerRowActivations(s.m, s.k, seed++);
    const std::vector<float> w = TiledWeight(s.n, s.k, seed++, /*exponent_cycle=*/0);
    const std::vector<float> want = CpuProduct(Dequantized(x, s.m, s.k, 1, 128, nullptr),
                                               Dequantized(w, s.n, s.k, 128, 128, nullptr), s.m,
                                               s.n, s.k);
    std::string matching;
    bool expected_matches = false;
    for (const Candidate& c : kCandidates) {
      absl::StatusOr<std::vector<float>> got = RunGemm(s, x, w, c.layout);
      ASSERT_TRUE(got.ok())
          << "cuBLASLt refused W BLK128x128_32F x X VEC128_32F (accepted on sm_90 per GPU.md): "
          << got.status();
      const double err = WorstPairError(*got, want, s.m, s.n, s.k);
      const bool match = err <= kLayoutMatchTol;
      std::printf("  m=%ld n=%ld k=%ld  %-50s max rel err %-10.3g %s\n", static_cast<long>(s.m),
                  static_cast<long>(s.n), static_cast<long>(s.k), c.name, err,
                  match ? "MATCH" : "no match");
      if (match) matching += std::string(matching.empty() ? "" : ", ") + c.name;
      if (SameLayout(c.layout, kCublasLtTileScaleLayout)) {
        expected_matches = match;
      } else {
        EXPECT_FALSE(match) << c.name << " also matches (error " << err << ")";
      }
    }
    std::printf("  -> matching: %s\n", matching.empty() ? "none" : matching.c_str());
    EXPECT_TRUE(expected_matches) << "the expected layout does not match; matching: "
                                  << (matching.empty() ? "none" : matching);
  }
}

TEST_F(GpuFp8Block128GemmTest, DenseActivationsWithWeightTilesMatchCpuProduct) {
  // The recipe's real use: every block of X nonzero, model-like shapes (124m QKV 768 -> 2304:
  // 18 x 6 tiles, a padded row of tiles), expected layout.
  const Shape shapes[] = {{256, 384, 256}, {256, 2304, 768}, {64, 768, 2048}};
  uint64_t seed = 7100;
  for (const Shape& s : shapes) {
    SCOPED_TRACE(::testing::Message() << "m=" << s.m << " n=" << s.n << " k=" << s.k);
    const std::vector<float> x = DenseActivations(s.m, s.k, seed++);
    const std::vector<float> w = TiledWeight(s.n, s.k, seed++, /*exponent_cycle=*/5);
    const std::vector<float> want = CpuProduct(Dequantized(x, s.m, s.k, 1, 128, nullptr),
                                               Dequantized(w, s.n, s.k, 128, 128, nullptr), s.m,
                                               s.n, s.k);
    absl::StatusOr<std::vector<float>> got = RunGemm(s, x, w, kCublasLtTileScaleLayout);
    ASSERT_TRUE(got.ok()) << "cuBLASLt refused W BLK128x128_32F x X VEC128_32F: "
                          << got.status();
    EXPECT_TRUE(::fp8d::testing::AllClose(*got, want, kDenseRelTol, kDenseAbsTolFraction));
  }
}

// The cast alone, against core's 128x128 emulation byte for byte: codes, scale_inv and scales
// at the layout's positions, padding untouched. Partial edge tiles (200 x 300) included.
TEST_F(GpuFp8Block128GemmTest, TileCastMatchesCoreEmulationInEveryLayout) {
  struct Extent {
    int64_t rows, cols;
  };
  const Extent extents[] = {{384, 256}, {200, 300}, {128, 128}};
  uint64_t seed = 7200;
  for (const Extent& e : extents) {
    const int64_t rows = e.rows, cols = e.cols;
    const std::vector<float> w = TiledWeight(rows, cols, seed++, /*exponent_cycle=*/0);
    std::vector<float> core_scales;
    Dequantized(w, rows, cols, 128, 128, &core_scales);
    std::vector<uint8_t> want_codes(w.size());
    const int64_t tile_cols = Fp8TileCount(cols);
    for (int64_t r = 0; r < rows; ++r) {
      for (int64_t c = 0; c < cols; ++c) {
        const float scale = core_scales[(r / kFp8TileDim) * tile_cols + c / kFp8TileDim];
        want_codes[r * cols + c] = FloatToFp8(w[r * cols + c] * scale, Fp8Format::kE4M3);
      }
    }
    for (const Candidate& cand : kCandidates) {
      SCOPED_TRACE(::testing::Message() << rows << "x" << cols << " " << cand.name);
      for (bool bf16_input : {false, true}) {
        DeviceBuffer<uint8_t> codes(w.size());
        DeviceBuffer<float> scale_inv(ScaleArrayFloats(rows, cols));
        DeviceBuffer<float> scales(ScaleArrayFloats(rows, cols));
        if (bf16_input) {
          DeviceBuffer<__nv_bfloat16> in(::fp8d::testing::ToBf16(w));
          Block128x128CastToFp8(in.get(), rows, cols, Fp8Format::kE4M3, cand.layout,
                                codes.get(), scale_inv.get(), scales.get(), nullptr);
          FP8D_TEST_CUDA(cudaDeviceSynchronize());
        } else {
          DeviceBuffer<float> in(w);
          Block128x128CastToFp8(in.get(), rows, cols, Fp8Format::kE4M3, cand.layout,
                                codes.get(), scale_inv.get(), scales.get(), nullptr);
          FP8D_TEST_CUDA(cudaDeviceSynchronize());
        }
        EXPECT_TRUE(::fp8d::testing::SameBytes(codes.Download(), want_codes));
        const std::vector<float> got_inv = scale_inv.Download(), got_scales = scales.Download();
        std::vector<bool> written(got_inv.size(), false);
        for (int64_t tr = 0; tr < Fp8TileCount(rows); ++tr) {
          for (int64_t tc = 0; tc < tile_cols; ++tc) {
            const int64_t at = Fp8TileScaleIndex(cand.layout, rows, cols, tr, tc);
            const float scale = core_scales[tr * tile_cols + tc];
            EXPECT_EQ(got_scales[at], scale) << "tile " << tr << "," << tc;
            EXPECT_EQ(got_inv[at], 1.0f / scale) << "tile " << tr << "," << tc;
            written[at] = true;
          }
        }
        for (size_t i = 0; i < got_inv.size(); ++i) {
          if (!written[i]) EXPECT_TRUE(std::isnan(got_inv[i])) << "padding entry " << i;
        }
      }
    }
  }
}

}  // namespace
}  // namespace fp8d::kernels
