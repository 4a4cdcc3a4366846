// The CUDA engine with FP8 casts fused into RMSNorm and SwiGLU (CudaEngineOptions::
// fuse_fp8_casts) computes exactly what it computes without them: under delayed scaling, four
// training steps of a 124m-shaped model give bit-identical losses, gradient norms, weights,
// optimizer state and FP8 scaling state, and the same evaluation loss.
#include <cuda_runtime.h>

#include <memory>
#include <vector>

#include "core/model_config.h"
#include "core/recipe_config.h"
#include "core/rng.h"
#include "gtest/gtest.h"
#include "kernels/cuda_engine.h"

namespace fp8d::kernels {
namespace {

bool HaveGpu() {
  int n = 0;
  return cudaGetDeviceCount(&n) == cudaSuccess && n > 0;
}

TEST(CudaEngineFusedTest, FusedFp8CastsChangeNoBit) {
  if (!HaveGpu()) GTEST_SKIP() << "no CUDA GPU on this machine";
  fp8d::v1::ModelConfig p;
  p.set_preset("124m");
  p.set_n_layer(2);
  p.set_vocab_size(4096);
  p.set_max_seq_len(64);
  const ModelConfig m = *ResolveModelConfig(p);
  RecipeConfig r;
  r.kind = RecipeKind::kDelayed;
  r.policy.min_gemm_dim = 16;  // every layer FP8 whatever the automatic threshold

  Rng rng(3);
  std::vector<TokenBatch> batches(2);
  for (TokenBatch& b : batches) {
    b.batch = 4;
    b.seq_len = 64;
    for (int i = 0; i < 4 * 64; ++i) {
      b.inputs.push_back(static_cast<int32_t>(rng.NextBelow(m.vocab_size)));
      b.targets.push_back(static_cast<int32_t>(rng.NextBelow(m.vocab_size)));
    }
  }
  std::unique_ptr<CudaEngine> engines[2];
  for (int fused = 0; fused < 2; ++fused) {
    CudaEngineOptions o;
    o.fuse_fp8_casts = fused == 1;
    auto e = CudaEngine::Create(m, r, /*seed=*/9, 4, 64, o);
    ASSERT_TRUE(e.ok()) << e.status();
    engines[fused] = std::move(*e);
  }
  ASSERT_EQ(engines[1]->PlanLayers(0).fp8_count(), 8);
  for (int s = 0; s < 4; ++s) {
    OptimizerStepArgs a;
    a.step = s;
    a.lr = 6e-4f;
    a.weight_decay = 0.1f;
    a.grad_clip = 1.f;
    // Two micro-batches: the weight cast is shared and the amax is the max over both.
    absl::StatusOr<StepResult> plain = engines[0]->TrainStep(batches, a);
    absl::StatusOr<StepResult> fused = engines[1]->TrainStep(batches, a);
    ASSERT_TRUE(plain.ok() && fused.ok()) << plain.status() << " " << fused.status();
    EXPECT_EQ(fused->loss, plain->loss) << "step " << s;
    EXPECT_EQ(fused->grad_norm, plain->grad_norm) << "step " << s;
  }
  absl::StatusOr<float> eval_plain = engines[0]->EvalLoss(batches[0]);
  absl::StatusOr<float> eval_fused = engines[1]->EvalLoss(batches[0]);
  ASSERT_TRUE(eval_plain.ok() && eval_fused.ok());
  EXPECT_EQ(*eval_fused, *eval_plain);
  absl::StatusOr<TensorMap> a = engines[0]->SaveState(), b = engines[1]->SaveState();
  ASSERT_TRUE(a.ok() && b.ok());
  ASSERT_EQ(a->size(), b->size());
  for (const auto& [name, t] : *a) {
    ASSERT_TRUE(b->count(name)) << name;
    EXPECT_EQ(b->at(name).data, t.data) << name;
  }
}

}  // namespace
}  // namespace fp8d::kernels
