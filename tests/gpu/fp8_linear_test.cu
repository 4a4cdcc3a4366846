// The GPU FP8 Linear layer (kernels/fp8_linear.h) against core's emulation (core/ref/fp8_linear.h)
// run on the same BF16-rounded inputs: Y, dX and dW for every recipe the engine runs on Hopper,
// HYBRID and E4M3, small shapes whose edge blocks are partial and the model's shapes. The casts
// are byte-exact with core's, so the GPU and the CPU multiply the same FP8 values and differ only
// by accumulation order and the output rounding. Inputs vary in magnitude by row, column and
// 128-column block and carry outliers, exact zeros and tiny values, so a scale taken from the
// wrong row, column or block, a wrong transposed copy or a wrong format changes results far
// beyond the tolerance, and the saturated and underflow counts are exercised.
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
#include "core/recipe_config.h"
#include "core/ref/fp8_linear.h"
#include "core/rng.h"
#include "gtest/gtest.h"
#include "kernels/fp8_cast.cuh"
#include "kernels/fp8_linear.h"
#include "kernels/gemm.h"
#include "kernels/gemm_fp8.h"
#include "tests/gpu/gpu_test_util.h"

namespace fp8d::kernels {
namespace {

using ::fp8d::testing::AllClose;
using ::fp8d::testing::DeviceBuffer;
using ::fp8d::testing::RoundToBf16;
using ::fp8d::testing::ToBf16;
using ::fp8d::testing::ToFloat;

#define FP8D_EXPECT_OK_OR_RETURN(expr)       \
  do {                                       \
    const absl::Status fp8d_st_ = (expr);    \
    EXPECT_TRUE(fp8d_st_.ok()) << fp8d_st_;  \
    if (!fp8d_st_.ok()) return;              \
  } while (0)

// BF16 outputs (Y, dX): the BF16 rounding plus FP32 (or Hopper's fast) accumulation order; the
// absolute part, a fraction of the output's largest magnitude, covers cancelling sums.
constexpr float kBf16OutRelTol = 2e-2f;
constexpr float kBf16OutAbsFraction = 4e-3f;
// dW is FP32 accumulated over m products of the same FP8 values on both sides.
constexpr float kDwRelTol = 5e-3f;
constexpr float kDwAbsFraction = 2e-3f;

// BF16-exact values whose magnitude changes by row, column and 128-column block (2^-5 .. 2^5),
// with outliers (x40), exact zeros and tiny values (1e-7, flushed to zero by most scales).
std::vector<float> RandomOperand(int64_t rows, int64_t cols, uint64_t seed) {
  Rng rng(seed);
  std::vector<float> x(static_cast<size_t>(rows * cols));
  for (int64_t r = 0; r < rows; ++r) {
    for (int64_t c = 0; c < cols; ++c) {
      const int e = static_cast<int>((r * 7 + (c / 128) * 3 + c % 5) % 11) - 5;
      float v = static_cast<float>(rng.NextNormal()) * std::ldexp(1.f, e);
      const uint64_t pick = rng.NextBelow(1000);
      if (pick < 5) v *= 40.f;
      else if (pick < 15) v = 0.f;
      else if (pick < 25) v = 1e-7f * (pick % 2 ? 1.f : -1.f);
      x[r * cols + c] = RoundToBf16(v);
    }
  }
  return x;
}

// a - b, to compare what a call added to dW rather than dW0 plus it (dW0 would dominate the
// absolute tolerance).
std::vector<float> Minus(const std::vector<float>& a, const std::vector<float>& b) {
  std::vector<float> d(a.size());
  for (size_t i = 0; i < a.size(); ++i) d[i] = a[i] - b[i];
  return d;
}

float HostAmax(const std::vector<float>& x) {
  float a = 0.f;
  for (float v : x) a = std::max(a, std::fabs(v));
  return a;
}

struct Case {
  std::string name;
  Fp8LinearOptions options;
};

Case MakeCase(Fp8LinearScaling scaling, Fp8Format grad_format) {
  Case c;
  c.options.scaling = scaling;
  c.options.grad_format = grad_format;
  c.options.margin = scaling == Fp8LinearScaling::kCurrent ? 1 : 0;
  c.options.fast_accum_forward = true;
  const char* names[] = {"delayed", "current", "rowwise", "1x128"};
  c.name = std::string(names[static_cast<int>(scaling)]) +
           (grad_format == Fp8Format::kE5M2 ? " hybrid" : " e4m3");
  return c;
}

// Delayed scales chosen from the data so that each tensor sees a different regime: the input
// saturates its outliers, the weight fits exactly, the gradient keeps a 2^-3 headroom.
struct DelayedScales {
  float input, weight, grad_output;
};

DelayedScales ChooseScales(const std::vector<float>& x, const std::vector<float>& w,
                           const std::vector<float>& dy, Fp8Format grad_format) {
  return {Fp8Max(Fp8Format::kE4M3) / (0.25f * HostAmax(x)), Fp8Max(Fp8Format::kE4M3) / HostAmax(w),
          std::ldexp(Fp8Max(grad_format) / HostAmax(dy), -3)};
}

ref::Fp8OperandQuant RefOperand(const Fp8LinearOptions& o, Fp8Format format, float scale) {
  ref::Fp8OperandQuant q;
  q.format = format;
  switch (o.scaling) {
    case Fp8LinearScaling::kDelayed:
      q.scaling = ref::Fp8Scaling::kTensor;
      q.scale = scale;
      break;
    case Fp8LinearScaling::kCurrent:
      q.scaling = ref::Fp8Scaling::kCurrentTensor;
      q.margin = o.margin;
      break;
    case Fp8LinearScaling::kRowwise:
      q.scaling = ref::Fp8Scaling::kBlocks;
      q.block_rows = 1;
      q.block_cols = 0;
      break;
    case Fp8LinearScaling::kBlock1x128:
      q.scaling = ref::Fp8Scaling::kBlocks;
      q.block_rows = 1;
      q.block_cols = 128;
      break;
  }
  return q;
}

// 128x128 weight tiles (the same tiles in W and W^T).
ref::Fp8OperandQuant RefWeight(const Fp8LinearOptions& o, float scale) {
  ref::Fp8OperandQuant q = RefOperand(o, Fp8Format::kE4M3, scale);
  if (o.weight_tiles_128x128) q.block_rows = 128;
  return q;
}

ref::Fp8LinearQuant RefQuant(const Fp8LinearOptions& o, const DelayedScales& s) {
  ref::Fp8LinearQuant q;
  q.input = RefOperand(o, Fp8Format::kE4M3, s.input);
  q.weight = RefWeight(o, s.weight);
  q.grad_output = RefOperand(o, o.grad_format, s.grad_output);
  return q;
}

void ExpectStatsEqual(const Fp8CastStats& got, const QuantStats& want, const char* role) {
  SCOPED_TRACE(role);
  EXPECT_EQ(got.amax, want.amax);
  EXPECT_EQ(got.nonzero, static_cast<uint64_t>(want.nonzero));
  EXPECT_EQ(got.saturated, static_cast<uint64_t>(want.saturated));
  EXPECT_EQ(got.underflow, static_cast<uint64_t>(want.underflow));
}

// Host data of one layer and one or two micro-batches, and the CPU results.
struct HostLayer {
  GemmShape s;
  std::vector<float> w, dw0;
  std::vector<float> x[2], dy[2];
  DelayedScales scales;
};

HostLayer MakeLayer(const GemmShape& s, Fp8Format grad_format, uint64_t seed) {
  HostLayer h;
  h.s = s;
  h.w = RandomOperand(s.n, s.k, seed);
  h.dw0 = ::fp8d::testing::RandomNormal(static_cast<size_t>(s.n * s.k), seed + 1, 0.5f, false);
  for (int b = 0; b < 2; ++b) {
    h.x[b] = RandomOperand(s.m, s.k, seed + 10 + b);
    // Gradients are small, as in training.
    h.dy[b] = RandomOperand(s.m, s.n, seed + 20 + b);
    for (float& v : h.dy[b]) v = RoundToBf16(v * 1e-3f);
  }
  h.scales = ChooseScales(h.x[0], h.w, h.dy[0], grad_format);
  return h;
}

class GpuFp8LinearTest : public ::fp8d::testing::GpuTest<> {
 protected:
  void SetUp() override {
    ::fp8d::testing::GpuTest<>::SetUp();
    if (IsSkipped()) return;
    gemm_workspace_ = std::make_unique<DeviceBuffer<uint8_t>>(kGemmWorkspaceBytes);
    auto runner = Fp8GemmRunner::Create(gemm_workspace_->get(), kGemmWorkspaceBytes);
    ASSERT_TRUE(runner.ok()) << runner.status();
    runner_ = std::move(*runner);
  }

  // One micro-batch x [m, k], dy [m, n] through `layer` (weights already cast from w [n, k]) on
  // the GPU and through the CPU reference: compares Y, dX and dW - dW0 and the INPUT and
  // GRAD_OUTPUT stats (and the WEIGHT stats when `weight_stats`: the cast's, which the reference
  // recomputes at each call). `dw` (device) and `want_dw` (host) accumulate over the calls from
  // dw0. Y goes to `y_out` when given.
  void CheckMicroBatch(Fp8Linear& layer, const ref::Fp8LinearQuant& quant,
                       const std::vector<float>& w, const std::vector<float>& x,
                       const std::vector<float>& dy, const std::vector<float>& dw0,
                       DeviceBuffer<float>& dw, std::vector<float>& want_dw,
                       const DeviceBuffer<Fp8CastStats>& stats, bool weight_stats,
                       std::vector<__nv_bfloat16>* y_out = nullptr) {
    const int m = static_cast<int>(layer.shape().m), n = static_cast<int>(layer.shape().n),
              k = static_cast<int>(layer.shape().k);
    ref::Fp8LinearStats want_stats;
    std::vector<float> want_y(static_cast<size_t>(m) * n), want_dx(static_cast<size_t>(m) * k);
    ref::Fp8LinearForward(x.data(), w.data(), want_y.data(), m, k, n, quant, &want_stats);
    ref::Fp8LinearBackward(dy.data(), x.data(), w.data(), want_dx.data(), want_dw.data(), m, k,
                           n, quant, &want_stats);

    DeviceBuffer<__nv_bfloat16> dx_in(ToBf16(x)), ddy(ToBf16(dy));
    DeviceBuffer<__nv_bfloat16> y(static_cast<size_t>(m) * n), dx(static_cast<size_t>(m) * k);
    FP8D_EXPECT_OK_OR_RETURN(layer.Forward(dx_in.get(), y.get(), nullptr));
    FP8D_EXPECT_OK_OR_RETURN(layer.Backward(ddy.get(), dx_in.get(), dx.get(), dw.get(), nullptr));

    const std::vector<__nv_bfloat16> got_y = y.Download();
    if (y_out != nullptr) *y_out = got_y;
    EXPECT_TRUE(AllClose(ToFloat(got_y), want_y, kBf16OutRelTol, kBf16OutAbsFraction)) << "Y";
    EXPECT_TRUE(AllClose(ToFloat(dx.Download()), want_dx, kBf16OutRelTol, kBf16OutAbsFraction))
        << "dX";
    EXPECT_TRUE(AllClose(Minus(dw.Download(), dw0), Minus(want_dw, dw0), kDwRelTol,
                         kDwAbsFraction))
        << "dW - dW0";
    const std::vector<Fp8CastStats> got_stats = stats.Download();
    ExpectStatsEqual(got_stats[kFp8Input], want_stats.input, "input");
    if (weight_stats) ExpectStatsEqual(got_stats[kFp8Weight], want_stats.weight, "weight");
    ExpectStatsEqual(got_stats[kFp8GradOutput], want_stats.grad_output, "grad_output");
  }

  // One micro-batch (forward + backward) on the GPU and on the CPU; compares Y, dX, dW and the
  // three tensors' stats.
  void CheckOneStep(const GemmShape& s, const Case& c, uint64_t seed) {
    SCOPED_TRACE(::testing::Message() << c.name << " m=" << s.m << " n=" << s.n << " k=" << s.k);
    const HostLayer h = MakeLayer(s, c.options.grad_format, seed);
    DeviceBuffer<float> scales(std::vector<float>{h.scales.input, h.scales.weight,
                                                  h.scales.grad_output});
    DeviceBuffer<uint8_t> workspace(Fp8Linear::WorkspaceBytes(s, c.options));
    DeviceBuffer<Fp8CastStats> stats(kFp8LinearRoles);
    auto layer = Fp8Linear::Create(runner_.get(), s, c.options,
                                   {scales.get(), scales.get() + 1, scales.get() + 2},
                                   workspace.get(), workspace.size(), stats.get());
    ASSERT_TRUE(layer.ok()) << layer.status();
    DeviceBuffer<__nv_bfloat16> w(ToBf16(h.w));
    DeviceBuffer<float> dw(h.dw0);
    std::vector<float> want_dw = h.dw0;
    layer->CastWeights(w.get(), nullptr);
    CheckMicroBatch(*layer, RefQuant(c.options, h.scales), h.w, h.x[0], h.dy[0], h.dw0, dw,
                    want_dw, stats, /*weight_stats=*/true);
  }

  void CheckShapes(const Case& c, const std::vector<GemmShape>& shapes, uint64_t seed) {
    for (const GemmShape& s : shapes) CheckOneStep(s, c, seed += 100);
  }

  std::unique_ptr<DeviceBuffer<uint8_t>> gemm_workspace_;
  std::unique_ptr<Fp8GemmRunner> runner_;
};

// Small shapes whose m, n, k are multiples of 16 but not of 128 (partial 1x128 blocks in every
// GEMM, including the token axis of the weight gradient), then the 124m QKV projection
// (768 -> 2304 at 256 tokens) and the 1b MLP up projection (2048 -> 8192 at 64 tokens).
const std::vector<GemmShape> kSmallShapes = {{48, 96, 80}, {144, 160, 384}};
const std::vector<GemmShape> kModelShapes = {{256, 2304, 768}, {64, 8192, 2048}};

std::vector<GemmShape> AllShapes() {
  std::vector<GemmShape> all = kSmallShapes;
  all.insert(all.end(), kModelShapes.begin(), kModelShapes.end());
  return all;
}

TEST_F(GpuFp8LinearTest, DelayedHybridMatchesReference) {
  CheckShapes(MakeCase(Fp8LinearScaling::kDelayed, Fp8Format::kE5M2), AllShapes(), 1000);
}

TEST_F(GpuFp8LinearTest, DelayedE4M3MatchesReference) {
  CheckShapes(MakeCase(Fp8LinearScaling::kDelayed, Fp8Format::kE4M3), kSmallShapes, 2000);
  CheckOneStep(kModelShapes[0], MakeCase(Fp8LinearScaling::kDelayed, Fp8Format::kE4M3), 2500);
}

TEST_F(GpuFp8LinearTest, CurrentHybridMatchesReference) {
  CheckShapes(MakeCase(Fp8LinearScaling::kCurrent, Fp8Format::kE5M2), AllShapes(), 3000);
}

TEST_F(GpuFp8LinearTest, CurrentE4M3MatchesReference) {
  CheckShapes(MakeCase(Fp8LinearScaling::kCurrent, Fp8Format::kE4M3), kSmallShapes, 4000);
  CheckOneStep(kModelShapes[0], MakeCase(Fp8LinearScaling::kCurrent, Fp8Format::kE4M3), 4500);
}

TEST_F(GpuFp8LinearTest, RowwiseE4M3MatchesReference) {
  CheckShapes(MakeCase(Fp8LinearScaling::kRowwise, Fp8Format::kE4M3), AllShapes(), 5000);
}

TEST_F(GpuFp8LinearTest, RowwiseHybridMatchesReference) {
  CheckShapes(MakeCase(Fp8LinearScaling::kRowwise, Fp8Format::kE5M2), kSmallShapes, 6000);
  CheckOneStep(kModelShapes[0], MakeCase(Fp8LinearScaling::kRowwise, Fp8Format::kE5M2), 6500);
}

TEST_F(GpuFp8LinearTest, Blockwise1x128E4M3MatchesReference) {
  CheckShapes(MakeCase(Fp8LinearScaling::kBlock1x128, Fp8Format::kE4M3), AllShapes(), 7000);
}

// 128x128 weight tiles at the model shapes (every dimension a multiple of 128) and one with
// partial tiles along both weight axes.
TEST_F(GpuFp8LinearTest, Blockwise128x128WeightTilesMatchReference) {
  Case c = MakeCase(Fp8LinearScaling::kBlock1x128, Fp8Format::kE5M2);
  c.options.weight_tiles_128x128 = true;
  c.name += " 128x128 weights";
  std::vector<GemmShape> shapes = kModelShapes;
  shapes.push_back({128, 2304, 768});
  shapes.push_back({144, 160, 384});
  CheckShapes(c, shapes, 13000);
}

TEST_F(GpuFp8LinearTest, Blockwise1x128HybridMatchesReference) {
  CheckShapes(MakeCase(Fp8LinearScaling::kBlock1x128, Fp8Format::kE5M2), kSmallShapes, 8000);
  CheckOneStep(kModelShapes[0], MakeCase(Fp8LinearScaling::kBlock1x128, Fp8Format::kE5M2), 8500);
}

// Two micro-batches on one weight cast: W's device buffer is poisoned (NaN) right after
// CastWeights, so any read of W after the cast shows up as NaN. Each micro-batch matches the
// CPU, dW holds dW0 plus both micro-batches' gradients, the INPUT/GRAD_OUTPUT stats describe
// the latest micro-batch and the WEIGHT stats the cast, and repeating micro-batch 1 gives the
// same Y, byte for byte.
TEST_F(GpuFp8LinearTest, CachedWeightsServeTwoMicroBatchesAndDwAccumulates) {
  const Case cases[] = {MakeCase(Fp8LinearScaling::kDelayed, Fp8Format::kE5M2),
                        MakeCase(Fp8LinearScaling::kCurrent, Fp8Format::kE5M2),
                        MakeCase(Fp8LinearScaling::kRowwise, Fp8Format::kE4M3),
                        MakeCase(Fp8LinearScaling::kBlock1x128, Fp8Format::kE4M3)};
  const GemmShape s{128, 256, 384};
  const int m = static_cast<int>(s.m), n = static_cast<int>(s.n);
  uint64_t seed = 9000;
  for (const Case& c : cases) {
    SCOPED_TRACE(c.name);
    const HostLayer h = MakeLayer(s, c.options.grad_format, seed += 100);
    const ref::Fp8LinearQuant quant = RefQuant(c.options, h.scales);

    DeviceBuffer<float> scales(std::vector<float>{h.scales.input, h.scales.weight,
                                                  h.scales.grad_output});
    DeviceBuffer<uint8_t> workspace(Fp8Linear::WorkspaceBytes(s, c.options));
    DeviceBuffer<Fp8CastStats> stats(kFp8LinearRoles);
    auto layer = Fp8Linear::Create(runner_.get(), s, c.options,
                                   {scales.get(), scales.get() + 1, scales.get() + 2},
                                   workspace.get(), workspace.size(), stats.get());
    ASSERT_TRUE(layer.ok()) << layer.status();
    DeviceBuffer<__nv_bfloat16> w(ToBf16(h.w));
    DeviceBuffer<float> dw(h.dw0);
    layer->CastWeights(w.get(), nullptr);
    w.Poison();

    std::vector<float> want_dw = h.dw0;
    std::vector<__nv_bfloat16> first_y;
    for (int b = 0; b < 2; ++b) {
      SCOPED_TRACE(::testing::Message() << "micro-batch " << b);
      CheckMicroBatch(*layer, quant, h.w, h.x[b], h.dy[b], h.dw0, dw, want_dw, stats,
                      /*weight_stats=*/true, b == 0 ? &first_y : nullptr);
    }

    DeviceBuffer<__nv_bfloat16> x0(ToBf16(h.x[0]));
    DeviceBuffer<__nv_bfloat16> y_again(static_cast<size_t>(m) * n);
    FP8D_EXPECT_OK_OR_RETURN(layer->Forward(x0.get(), y_again.get(), nullptr));
    EXPECT_TRUE(::fp8d::testing::SameBytes(y_again.Download(), first_y));
  }
}

// A layer created for 256 rows runs calls of 128 and then 144 rows (SetRows, as the LM head runs
// its row chunks) on the weight copies cast once, with W poisoned after the cast: each call
// matches the CPU at its own row count. Row counts above the created m or off the 16 grid are
// INVALID_ARGUMENT.
TEST_F(GpuFp8LinearTest, FewerRowsThanCreatedMatchTheReferenceOnTheCachedWeights) {
  const Case cases[] = {MakeCase(Fp8LinearScaling::kDelayed, Fp8Format::kE5M2),
                        MakeCase(Fp8LinearScaling::kCurrent, Fp8Format::kE5M2),
                        MakeCase(Fp8LinearScaling::kRowwise, Fp8Format::kE4M3),
                        MakeCase(Fp8LinearScaling::kBlock1x128, Fp8Format::kE4M3)};
  const GemmShape created{256, 256, 384};
  const int n = static_cast<int>(created.n), k = static_cast<int>(created.k);
  uint64_t seed = 19000;
  for (const Case& c : cases) {
    SCOPED_TRACE(c.name);
    const HostLayer h = MakeLayer(created, c.options.grad_format, seed += 100);
    DeviceBuffer<float> scales(std::vector<float>{h.scales.input, h.scales.weight,
                                                  h.scales.grad_output});
    DeviceBuffer<uint8_t> workspace(Fp8Linear::WorkspaceBytes(created, c.options));
    DeviceBuffer<Fp8CastStats> stats(kFp8LinearRoles);
    auto layer = Fp8Linear::Create(runner_.get(), created, c.options,
                                   {scales.get(), scales.get() + 1, scales.get() + 2},
                                   workspace.get(), workspace.size(), stats.get());
    ASSERT_TRUE(layer.ok()) << layer.status();
    DeviceBuffer<__nv_bfloat16> w(ToBf16(h.w));
    layer->CastWeights(w.get(), nullptr);
    w.Poison();
    EXPECT_EQ(layer->SetRows(272).code(), absl::StatusCode::kInvalidArgument);
    EXPECT_EQ(layer->SetRows(120).code(), absl::StatusCode::kInvalidArgument);
    EXPECT_EQ(layer->SetRows(0).code(), absl::StatusCode::kInvalidArgument);

    const ref::Fp8LinearQuant quant = RefQuant(c.options, h.scales);
    for (const int m : {128, 144}) {
      SCOPED_TRACE(::testing::Message() << "m=" << m);
      ASSERT_TRUE(layer->SetRows(m).ok());
      EXPECT_EQ(layer->shape().m, m);
      // The first m rows of the created-size operands; a fresh dW each time.
      const std::vector<float> x(h.x[0].begin(), h.x[0].begin() + static_cast<size_t>(m) * k);
      const std::vector<float> dy(h.dy[0].begin(), h.dy[0].begin() + static_cast<size_t>(m) * n);
      DeviceBuffer<float> dw(h.dw0);
      std::vector<float> want_dw = h.dw0;
      CheckMicroBatch(*layer, quant, h.w, x, dy, h.dw0, dw, want_dw, stats,
                      /*weight_stats=*/false);
    }
  }
}

// Two layers sharing one scratch, called as a model calls them (A forward, B forward, B backward,
// A backward: B's calls overwrite the scratch between A's), give byte for byte what A gives with
// the scratch inside its own workspace.
TEST_F(GpuFp8LinearTest, SharedScratchBetweenLayersGivesTheSameBytes) {
  const Case cases[] = {MakeCase(Fp8LinearScaling::kDelayed, Fp8Format::kE5M2),
                        MakeCase(Fp8LinearScaling::kCurrent, Fp8Format::kE5M2),
                        MakeCase(Fp8LinearScaling::kRowwise, Fp8Format::kE4M3),
                        MakeCase(Fp8LinearScaling::kBlock1x128, Fp8Format::kE5M2)};
  const GemmShape sa{128, 256, 384}, sb{128, 384, 256};
  uint64_t seed = 12000;
  for (const Case& c : cases) {
    SCOPED_TRACE(c.name);
    const HostLayer ha = MakeLayer(sa, c.options.grad_format, seed += 100);
    const HostLayer hb = MakeLayer(sb, c.options.grad_format, seed += 100);
    DeviceBuffer<float> scales(std::vector<float>{ha.scales.input, ha.scales.weight,
                                                  ha.scales.grad_output, hb.scales.input,
                                                  hb.scales.weight, hb.scales.grad_output});
    DeviceBuffer<Fp8CastStats> stats(2 * kFp8LinearRoles);
    const size_t scratch_bytes =
        std::max(Fp8Linear::ScratchBytes(sa, c.options), Fp8Linear::ScratchBytes(sb, c.options));
    ASSERT_GT(scratch_bytes, 0u);
    ASSERT_LT(Fp8Linear::WorkspaceBytes(sa, c.options, /*shared_scratch=*/true),
              Fp8Linear::WorkspaceBytes(sa, c.options));
    DeviceBuffer<uint8_t> scratch(scratch_bytes);
    DeviceBuffer<uint8_t> ws_a(Fp8Linear::WorkspaceBytes(sa, c.options, true));
    DeviceBuffer<uint8_t> ws_b(Fp8Linear::WorkspaceBytes(sb, c.options, true));
    DeviceBuffer<uint8_t> ws_alone(Fp8Linear::WorkspaceBytes(sa, c.options));
    auto a = Fp8Linear::Create(runner_.get(), sa, c.options,
                               {scales.get(), scales.get() + 1, scales.get() + 2}, ws_a.get(),
                               ws_a.size(), stats.get(), scratch.get(), scratch.size());
    auto b = Fp8Linear::Create(runner_.get(), sb, c.options,
                               {scales.get() + 3, scales.get() + 4, scales.get() + 5},
                               ws_b.get(), ws_b.size(), stats.get() + kFp8LinearRoles,
                               scratch.get(), scratch.size());
    auto alone = Fp8Linear::Create(runner_.get(), sa, c.options,
                                   {scales.get(), scales.get() + 1, scales.get() + 2},
                                   ws_alone.get(), ws_alone.size(), stats.get());
    ASSERT_TRUE(a.ok()) << a.status();
    ASSERT_TRUE(b.ok()) << b.status();
    ASSERT_TRUE(alone.ok()) << alone.status();

    DeviceBuffer<__nv_bfloat16> wa(ToBf16(ha.w)), xa(ToBf16(ha.x[0])), dya(ToBf16(ha.dy[0]));
    DeviceBuffer<__nv_bfloat16> wb(ToBf16(hb.w)), xb(ToBf16(hb.x[0])), dyb(ToBf16(hb.dy[0]));
    DeviceBuffer<__nv_bfloat16> ya(static_cast<size_t>(sa.m * sa.n)),
        dxa(static_cast<size_t>(sa.m * sa.k)), yb(static_cast<size_t>(sb.m * sb.n)),
        dxb(static_cast<size_t>(sb.m * sb.k)), y1(static_cast<size_t>(sa.m * sa.n)),
        dx1(static_cast<size_t>(sa.m * sa.k));
    DeviceBuffer<float> dwa(ha.dw0), dwb(hb.dw0), dw1(ha.dw0);

    alone->CastWeights(wa.get(), nullptr);
    FP8D_EXPECT_OK_OR_RETURN(alone->Forward(xa.get(), y1.get(), nullptr));
    FP8D_EXPECT_OK_OR_RETURN(alone->Backward(dya.get(), xa.get(), dx1.get(), dw1.get(), nullptr));

    a->CastWeights(wa.get(), nullptr);
    b->CastWeights(wb.get(), nullptr);
    FP8D_EXPECT_OK_OR_RETURN(a->Forward(xa.get(), ya.get(), nullptr));
    FP8D_EXPECT_OK_OR_RETURN(b->Forward(xb.get(), yb.get(), nullptr));
    FP8D_EXPECT_OK_OR_RETURN(b->Backward(dyb.get(), xb.get(), dxb.get(), dwb.get(), nullptr));
    FP8D_EXPECT_OK_OR_RETURN(a->Backward(dya.get(), xa.get(), dxa.get(), dwa.get(), nullptr));

    EXPECT_TRUE(::fp8d::testing::SameBytes(ya.Download(), y1.Download())) << "Y";
    EXPECT_TRUE(::fp8d::testing::SameBytes(dxa.Download(), dx1.Download())) << "dX";
    EXPECT_TRUE(::fp8d::testing::SameBytes(dwa.Download(), dw1.Download())) << "dW";
  }
}

// Forward with a residual adds it in the GEMM's epilogue: Y + R up to the BF16 rounding of Y,
// for every scaling (each is its own cuBLASLt plan with beta = 1).
TEST_F(GpuFp8LinearTest, ForwardAddsTheResidualInTheEpilogue) {
  const Case cases[] = {MakeCase(Fp8LinearScaling::kDelayed, Fp8Format::kE5M2),
                        MakeCase(Fp8LinearScaling::kCurrent, Fp8Format::kE5M2),
                        MakeCase(Fp8LinearScaling::kRowwise, Fp8Format::kE4M3),
                        MakeCase(Fp8LinearScaling::kBlock1x128, Fp8Format::kE5M2)};
  const GemmShape s{256, 768, 768};
  uint64_t seed = 14000;
  for (const Case& c : cases) {
    SCOPED_TRACE(c.name);
    const HostLayer h = MakeLayer(s, c.options.grad_format, seed += 100);
    const std::vector<float> r = RandomOperand(s.m, s.n, seed + 7);
    DeviceBuffer<float> scales(std::vector<float>{h.scales.input, h.scales.weight,
                                                  h.scales.grad_output});
    DeviceBuffer<uint8_t> workspace(Fp8Linear::WorkspaceBytes(s, c.options));
    DeviceBuffer<Fp8CastStats> stats(kFp8LinearRoles);
    auto layer = Fp8Linear::Create(runner_.get(), s, c.options,
                                   {scales.get(), scales.get() + 1, scales.get() + 2},
                                   workspace.get(), workspace.size(), stats.get());
    ASSERT_TRUE(layer.ok()) << layer.status();
    DeviceBuffer<__nv_bfloat16> w(ToBf16(h.w)), x(ToBf16(h.x[0])), res(ToBf16(r));
    DeviceBuffer<__nv_bfloat16> y(static_cast<size_t>(s.m * s.n)),
        y_res(static_cast<size_t>(s.m * s.n));
    layer->CastWeights(w.get(), nullptr);
    FP8D_EXPECT_OK_OR_RETURN(layer->Forward(x.get(), y.get(), nullptr));
    FP8D_EXPECT_OK_OR_RETURN(layer->Forward(x.get(), y_res.get(), nullptr, true, res.get()));
    std::vector<float> want = ToFloat(y.Download());
    for (size_t i = 0; i < want.size(); ++i) want[i] += r[i];
    EXPECT_TRUE(AllClose(ToFloat(y_res.Download()), want, kBf16OutRelTol, kBf16OutAbsFraction));
  }
}

// CastWeights from the FP32 master gives the same FP8 weights as from its BF16 copy when the
// master holds BF16 values, so the forward output is identical byte for byte.
TEST_F(GpuFp8LinearTest, Fp32MasterWeightsCastLikeTheirBf16Copy) {
  const GemmShape s{64, 256, 256};
  for (const Fp8LinearScaling scaling :
       {Fp8LinearScaling::kCurrent, Fp8LinearScaling::kRowwise, Fp8LinearScaling::kBlock1x128}) {
    const Case c = MakeCase(scaling, Fp8Format::kE4M3);
    SCOPED_TRACE(c.name);
    const HostLayer h = MakeLayer(s, Fp8Format::kE4M3, 11000);
    DeviceBuffer<uint8_t> workspace(Fp8Linear::WorkspaceBytes(s, c.options));
    DeviceBuffer<Fp8CastStats> stats(kFp8LinearRoles);
    auto layer = Fp8Linear::Create(runner_.get(), s, c.options, {}, workspace.get(),
                                   workspace.size(), stats.get());
    ASSERT_TRUE(layer.ok()) << layer.status();
    DeviceBuffer<__nv_bfloat16> w16(ToBf16(h.w)), x(ToBf16(h.x[0]));
    DeviceBuffer<float> w32(h.w);
    DeviceBuffer<__nv_bfloat16> y16(static_cast<size_t>(s.m * s.n)),
        y32(static_cast<size_t>(s.m * s.n));
    layer->CastWeights(w16.get(), nullptr);
    FP8D_EXPECT_OK_OR_RETURN(layer->Forward(x.get(), y16.get(), nullptr, false));
    layer->CastWeights(w32.get(), nullptr);
    FP8D_EXPECT_OK_OR_RETURN(layer->Forward(x.get(), y32.get(), nullptr, false));
    EXPECT_TRUE(::fp8d::testing::SameBytes(y16.Download(), y32.Download()));
  }
}

TEST_F(GpuFp8LinearTest, ForwardBeforeCastWeightsIsFailedPrecondition) {
  const GemmShape s{16, 16, 16};
  const Fp8LinearOptions o = MakeCase(Fp8LinearScaling::kCurrent, Fp8Format::kE4M3).options;
  DeviceBuffer<uint8_t> workspace(Fp8Linear::WorkspaceBytes(s, o));
  DeviceBuffer<Fp8CastStats> stats(kFp8LinearRoles);
  DeviceBuffer<__nv_bfloat16> x(256), y(256);
  auto layer =
      Fp8Linear::Create(runner_.get(), s, o, {}, workspace.get(), workspace.size(), stats.get());
  ASSERT_TRUE(layer.ok()) << layer.status();
  EXPECT_EQ(layer->Forward(x.get(), y.get(), nullptr).code(),
            absl::StatusCode::kFailedPrecondition);
}

// Recipe mapping and argument checks need no device: Create only lays out the buffer.
TEST(GpuFp8LinearConfigTest, RecipesMapToOptionsAndUnsupportedOnesAreRefused) {
  RecipeConfig r;
  r.kind = RecipeKind::kDelayed;
  r.format = RecipeFormat::kHybrid;
  r.policy.fast_accum_forward = false;
  r.margin = 2;
  const absl::StatusOr<Fp8LinearOptions> o = Fp8LinearOptionsFromRecipe(r);
  ASSERT_TRUE(o.ok()) << o.status();
  EXPECT_EQ(o->scaling, Fp8LinearScaling::kDelayed);
  EXPECT_EQ(o->grad_format, Fp8Format::kE5M2);
  EXPECT_EQ(o->margin, 2);
  EXPECT_FALSE(o->fast_accum_forward);

  r.kind = RecipeKind::kBlockwise;
  r.format = RecipeFormat::kE4M3;
  const absl::StatusOr<Fp8LinearOptions> block = Fp8LinearOptionsFromRecipe(r);
  ASSERT_TRUE(block.ok()) << block.status();
  EXPECT_EQ(block->scaling, Fp8LinearScaling::kBlock1x128);
  EXPECT_EQ(block->grad_format, Fp8Format::kE4M3);

  EXPECT_FALSE(block->weight_tiles_128x128);
  r.weight_block = WeightBlock::k128x128;
  const absl::StatusOr<Fp8LinearOptions> tiles = Fp8LinearOptionsFromRecipe(r);
  ASSERT_TRUE(tiles.ok()) << tiles.status();
  EXPECT_EQ(tiles->scaling, Fp8LinearScaling::kBlock1x128);
  EXPECT_TRUE(tiles->weight_tiles_128x128);
  r.kind = RecipeKind::kMxfp8;
  EXPECT_EQ(Fp8LinearOptionsFromRecipe(r).status().code(),
            absl::StatusCode::kFailedPrecondition);
  r.kind = RecipeKind::kBf16;
  EXPECT_EQ(Fp8LinearOptionsFromRecipe(r).status().code(), absl::StatusCode::kInvalidArgument);
}

TEST(GpuFp8LinearConfigTest, CreateRejectsIllegalShapesSmallWorkspacesAndMissingScales) {
  // Never dereferenced: Create only checks and carves pointers.
  alignas(256) static uint8_t fake_workspace[256];
  auto* runner = reinterpret_cast<Fp8GemmRunner*>(fake_workspace);
  auto* stats = reinterpret_cast<Fp8CastStats*>(fake_workspace);
  const float* scale = reinterpret_cast<const float*>(fake_workspace);
  const Fp8LinearScales scales{scale, scale, scale};
  Fp8LinearOptions o;
  o.scaling = Fp8LinearScaling::kDelayed;
  const GemmShape ok{64, 128, 256};
  const size_t bytes = Fp8Linear::WorkspaceBytes(ok, o);
  // Six FP8 copies at least.
  EXPECT_GE(bytes, static_cast<size_t>(2 * (64 * 256 + 128 * 256 + 64 * 128)));
  EXPECT_TRUE(Fp8Linear::Create(runner, ok, o, scales, fake_workspace, bytes, stats).ok());

  for (const GemmShape& bad : {GemmShape{40, 128, 256}, GemmShape{64, 120, 256},
                               GemmShape{64, 128, 0}}) {
    const absl::Status st =
        Fp8Linear::Create(runner, bad, o, scales, fake_workspace, bytes << 4, stats).status();
    EXPECT_EQ(st.code(), absl::StatusCode::kInvalidArgument) << st;
    EXPECT_NE(st.message().find("multiple of 16"), std::string::npos) << st;
  }
  EXPECT_EQ(Fp8Linear::Create(runner, ok, o, scales, fake_workspace, bytes - 1, stats)
                .status()
                .code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(Fp8Linear::Create(runner, ok, o, {scale, nullptr, scale}, fake_workspace, bytes,
                              stats)
                .status()
                .code(),
            absl::StatusCode::kInvalidArgument);
  // Per-tensor current, rowwise and blockwise read no scales from the caller.
  o.scaling = Fp8LinearScaling::kRowwise;
  EXPECT_TRUE(Fp8Linear::Create(runner, ok, o, {}, fake_workspace,
                                Fp8Linear::WorkspaceBytes(ok, o), stats)
                  .ok());
  // The block modes need room for their scale arrays on top of the per-tensor layout.
  Fp8LinearOptions block = o;
  block.scaling = Fp8LinearScaling::kBlock1x128;
  Fp8LinearOptions tensor = o;
  tensor.scaling = Fp8LinearScaling::kCurrent;
  EXPECT_GT(Fp8Linear::WorkspaceBytes(ok, block), Fp8Linear::WorkspaceBytes(ok, tensor));
}

}  // namespace
}  // namespace fp8d::kernels
