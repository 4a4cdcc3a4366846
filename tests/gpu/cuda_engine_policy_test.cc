// The CUDA engine under the two per-layer policies that give a GEMM layer an FP8 shape of its
// own (kernels/cuda_engine_linear.cc):
//  - skip_lm_head: false runs the LM head in FP8, in row chunks: each recipe tracks the CPU
//    engine; a chunked head under current or rowwise scaling (scales over every token) stays
//    BF16 by plan; chunking changes no statistic (the step's amax covers every chunk).
//  - skip_attention_qk: true runs attn.qkv's V rows FP8 and its Q and K rows BF16: each recipe
//    tracks the CPU engine, which does the same, and the FP8 weight statistics are the V rows'.
// And cache_fp8_weights: false, which changes when the weights are cast, not what they become.
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <algorithm>

#include <cmath>
#include <memory>
#include <string>
#include <vector>

#include "core/cpu_engine.h"
#include "core/model_config.h"
#include "core/recipe_config.h"
#include "gtest/gtest.h"
#include "kernels/cuda_engine.h"
#include "tests/gpu/engine_test_util.h"
#include "tests/gpu/gpu_test_util.h"

namespace fp8d::kernels {
namespace {

using engine_test::Batches;
using engine_test::CpuWith;
using engine_test::ExpectFp8Tracks;
using engine_test::GpuWith;
using engine_test::kFp8Steps;
using engine_test::kGpuFp8Recipes;
using engine_test::Tiny;
using engine_test::Train;

// Every layer FP8 (the tiny model's GEMMs are below the automatic size threshold).
RecipeConfig Recipe(RecipeKind kind, bool fp8_lm_head, bool bf16_qk) {
  RecipeConfig r = engine_test::Recipe(kind);
  r.policy.skip_lm_head = !fp8_lm_head;
  r.policy.skip_attention_qk = bf16_qk;
  return r;
}

std::unique_ptr<CudaEngine> Gpu(const ModelConfig& m, const RecipeConfig& r, int batch, int seq,
                                int64_t lm_head_chunk_rows = 0) {
  CudaEngineOptions o;
  o.lm_head_chunk_rows = lm_head_chunk_rows;
  return GpuWith(m, r, batch, seq, /*seed=*/7, o);
}

bool PlansFp8(const LayerPlan& plan, const std::string& layer) {
  for (size_t i = 0; i < plan.layers.size(); ++i) {
    if (plan.layers[i] == layer) return plan.fp8[i];
  }
  ADD_FAILURE() << "no layer " << layer;
  return false;
}

const fp8d::v1::TensorAmax* FindTensor(const fp8d::v1::AmaxRecord& record,
                                       const std::string& layer, fp8d::v1::TensorRole role) {
  for (const auto& t : record.tensors()) {
    if (t.layer() == layer && t.role() == role) return &t;
  }
  ADD_FAILURE() << "no " << fp8d::v1::TensorRole_Name(role) << " tensor of " << layer;
  return nullptr;
}

// 256 tokens per micro-batch: in two chunks of 128 under delayed and blockwise (the GPU's
// chunked path), in one under current and rowwise (which run a chunked head BF16, checked by
// the next test).
TEST(CudaEnginePolicyTest, Fp8LmHeadTracksTheCpuEngineFor10Steps) {
  FP8D_REQUIRE_GPU();
  const ModelConfig m = Tiny();
  const auto batches = Batches(m, 4, 4, 64, 101);
  for (RecipeKind kind : kGpuFp8Recipes) {
    const std::string what = std::string(RecipeKindName(kind)) + " with an FP8 LM head";
    const bool chunked = kind == RecipeKind::kDelayed || kind == RecipeKind::kBlockwise;
    const RecipeConfig r = Recipe(kind, /*fp8_lm_head=*/true, /*bf16_qk=*/false);
    auto gpu = Gpu(m, r, 4, 64, chunked ? 128 : 0);
    auto cpu = CpuWith(m, r);
    ASSERT_TRUE(gpu && cpu) << what;
    EXPECT_TRUE(PlansFp8(gpu->PlanLayers(0), "lm_head")) << what;
    EXPECT_EQ(gpu->PlanLayers(0).fp8, cpu->PlanLayers(0).fp8) << what;
    const std::vector<StepResult> g = Train(*gpu, batches, 0, kFp8Steps);
    const std::vector<StepResult> c = Train(*cpu, batches, 0, kFp8Steps);
    ExpectFp8Tracks(g, c, what);
    // The head's three tensors are reported, with an amax.
    const fp8d::v1::AmaxRecord record = gpu->AmaxTelemetry();
    for (auto role : {fp8d::v1::INPUT, fp8d::v1::WEIGHT, fp8d::v1::GRAD_OUTPUT}) {
      const fp8d::v1::TensorAmax* t = FindTensor(record, "lm_head", role);
      if (t != nullptr) EXPECT_GT(t->amax(), 0.f) << what << " " << fp8d::v1::TensorRole_Name(role);
    }
  }
}

TEST(CudaEnginePolicyTest, ChunkedLmHeadRunsBf16UnderCurrentAndRowwiseScaling) {
  FP8D_REQUIRE_GPU();
  const ModelConfig m = Tiny();
  for (RecipeKind kind : kGpuFp8Recipes) {
    const RecipeConfig r = Recipe(kind, /*fp8_lm_head=*/true, /*bf16_qk=*/false);
    const bool spans_tokens = kind == RecipeKind::kCurrent || kind == RecipeKind::kRowwise;
    auto chunked = Gpu(m, r, 4, 64, 128);
    auto whole = Gpu(m, r, 4, 64);
    ASSERT_TRUE(chunked && whole);
    EXPECT_EQ(PlansFp8(chunked->PlanLayers(0), "lm_head"), !spans_tokens) << RecipeKindName(kind);
    EXPECT_TRUE(PlansFp8(whole->PlanLayers(0), "lm_head")) << RecipeKindName(kind);
  }
  CudaEngineOptions bad;
  bad.lm_head_chunk_rows = 100;
  EXPECT_EQ(CudaEngine::Create(m, RecipeConfig{}, 7, 4, 64, bad).status().code(),
            absl::StatusCode::kInvalidArgument);
}

// One step of 512 tokens with the head in four chunks of 128 and in one chunk, from the same
// weights and batch: the head's input is the same tensor bit for bit, so its amax and the
// fraction flushed to zero must be equal, which they are only if every chunk's statistics
// reached the step's; the gradient's amax and the loss agree to rounding (the two GEMM splits
// round differently). Four batches, so that the largest element is not always in the last chunk.
TEST(CudaEnginePolicyTest, ChunkedLmHeadStatisticsCoverEveryChunk) {
  FP8D_REQUIRE_GPU();
  const ModelConfig m = Tiny();
  const auto batches = Batches(m, 4, 8, 64, 111);
  for (RecipeKind kind : {RecipeKind::kDelayed, RecipeKind::kBlockwise}) {
    const RecipeConfig r = Recipe(kind, /*fp8_lm_head=*/true, /*bf16_qk=*/false);
    for (size_t b = 0; b < batches.size(); ++b) {
      SCOPED_TRACE(::testing::Message() << RecipeKindName(kind) << " batch " << b);
      auto chunked = Gpu(m, r, 8, 64, 128);
      auto whole = Gpu(m, r, 8, 64);
      ASSERT_TRUE(chunked && whole);
      ASSERT_TRUE(PlansFp8(chunked->PlanLayers(0), "lm_head"));
      const std::vector<TokenBatch> one = {batches[b]};
      const std::vector<StepResult> rc = Train(*chunked, one, 0, 1);
      const std::vector<StepResult> rw = Train(*whole, one, 0, 1);
      ASSERT_EQ(rc.size(), 1u);
      ASSERT_EQ(rw.size(), 1u);
      EXPECT_NEAR(rc[0].loss, rw[0].loss, 1e-3f * rw[0].loss);
      const fp8d::v1::AmaxRecord tc = chunked->AmaxTelemetry();
      const fp8d::v1::AmaxRecord tw = whole->AmaxTelemetry();
      const auto* xc = FindTensor(tc, "lm_head", fp8d::v1::INPUT);
      const auto* xw = FindTensor(tw, "lm_head", fp8d::v1::INPUT);
      const auto* gc = FindTensor(tc, "lm_head", fp8d::v1::GRAD_OUTPUT);
      const auto* gw = FindTensor(tw, "lm_head", fp8d::v1::GRAD_OUTPUT);
      ASSERT_TRUE(xc && xw && gc && gw);
      EXPECT_EQ(xc->amax(), xw->amax());
      EXPECT_EQ(xc->frac_underflow(), xw->frac_underflow());
      EXPECT_EQ(xc->frac_saturated(), xw->frac_saturated());
      EXPECT_NEAR(gc->amax(), gw->amax(), 0.01f * gw->amax());
      EXPECT_NEAR(gc->frac_underflow(), gw->frac_underflow(), 0.01f);
    }
  }
}

// attn.qkv's V rows FP8, Q and K BF16 on both engines; the layer's FP8 weight statistics are
// those of the V rows of the initial weights (the cast before the first update).
TEST(CudaEnginePolicyTest, VOnlyFp8QkvUnderSkipAttentionQkTracksTheCpuEngineFor10Steps) {
  FP8D_REQUIRE_GPU();
  const ModelConfig m = Tiny();
  const auto batches = Batches(m, 4, 4, 64, 121);
  const int64_t qk_rows = int64_t{m.d_model} + m.kv_dim(), d = m.d_model;
  for (RecipeKind kind : kGpuFp8Recipes) {
    const std::string what = std::string(RecipeKindName(kind)) + " with BF16 Q and K";
    const RecipeConfig r = Recipe(kind, /*fp8_lm_head=*/false, /*bf16_qk=*/true);
    auto gpu = Gpu(m, r, 4, 64);
    auto cpu = CpuWith(m, r);
    ASSERT_TRUE(gpu && cpu) << what;
    EXPECT_TRUE(PlansFp8(gpu->PlanLayers(0), "layers.0.attn.qkv")) << what;
    EXPECT_EQ(gpu->PlanLayers(0).fp8, cpu->PlanLayers(0).fp8) << what;

    absl::StatusOr<TensorMap> initial = gpu->SaveState();
    ASSERT_TRUE(initial.ok()) << initial.status();
    const HostTensor& w = initial->at("model.layers.0.self_attn.qkv_proj.weight");
    // The weights are cast as their BF16 copy would be, so the amax may be the BF16-rounded one.
    float v_amax = 0.f, all_amax = 0.f;
    for (size_t i = 0; i < w.data.size(); ++i) {
      all_amax = std::max(all_amax, std::fabs(w.data[i]));
      if (static_cast<int64_t>(i) >= qk_rows * d) v_amax = std::max(v_amax, std::fabs(w.data[i]));
    }
    const float v_amax_bf16 = __bfloat162float(__float2bfloat16_rn(v_amax));

    const std::vector<StepResult> g1 = Train(*gpu, batches, 0, 1);
    const fp8d::v1::AmaxRecord first = gpu->AmaxTelemetry();
    if (const auto* t = FindTensor(first, "layers.0.attn.qkv", fp8d::v1::WEIGHT)) {
      EXPECT_TRUE(t->amax() == v_amax || t->amax() == v_amax_bf16)
          << what << ": weight amax " << t->amax() << ", V rows' " << v_amax << " (all rows' "
          << all_amax << ")";
    }
    std::vector<StepResult> g = g1;
    for (const StepResult& s : Train(*gpu, batches, 1, kFp8Steps - 1)) g.push_back(s);
    const std::vector<StepResult> c = Train(*cpu, batches, 0, kFp8Steps);
    ExpectFp8Tracks(g, c, what);
  }
}

// cache_fp8_weights: false casts the weights before each micro-batch instead of once per step;
// the weights and their scales change only between steps, so with two micro-batches a step the
// losses and gradient norms are the same bits.
TEST(CudaEnginePolicyTest, UncachedFp8WeightsGiveTheSameSteps) {
  FP8D_REQUIRE_GPU();
  const ModelConfig m = Tiny();
  const auto batches = Batches(m, 4, 4, 64, 131);
  for (RecipeKind kind : {RecipeKind::kDelayed, RecipeKind::kCurrent}) {
    RecipeConfig cached = Recipe(kind, /*fp8_lm_head=*/false, /*bf16_qk=*/false);
    RecipeConfig uncached = cached;
    uncached.policy.cache_fp8_weights = false;
    auto a = Gpu(m, cached, 4, 64);
    auto b = Gpu(m, uncached, 4, 64);
    ASSERT_TRUE(a && b);
    const std::vector<StepResult> ra = Train(*a, batches, 0, 3, /*micro=*/2);
    const std::vector<StepResult> rb = Train(*b, batches, 0, 3, /*micro=*/2);
    ASSERT_EQ(ra.size(), 3u);
    ASSERT_EQ(rb.size(), 3u);
    for (size_t s = 0; s < ra.size(); ++s) {
      EXPECT_EQ(ra[s].loss, rb[s].loss) << RecipeKindName(kind) << " step " << s;
      EXPECT_EQ(ra[s].grad_norm, rb[s].grad_norm) << RecipeKindName(kind) << " step " << s;
    }
  }
}

}  // namespace
}  // namespace fp8d::kernels
