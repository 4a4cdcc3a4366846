// The non-finite guard of the CUDA engine: a step whose loss or gradient norm is not finite is
// reported as skipped and changes no weight and no optimizer state; the next finite step trains.
// Checked for BF16 and every FP8 recipe of the GPU engine.
#include <cuda_runtime.h>

#include <cmath>
#include <limits>
#include <memory>
#include <string>
#include <vector>

#include "absl/strings/match.h"
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

ModelConfig Tiny() {
  fp8d::v1::ModelConfig p;
  p.set_preset("tiny");
  return *ResolveModelConfig(p);
}

TokenBatch RandomBatch(const ModelConfig& m, int batch, int seq, uint64_t seed) {
  Rng rng(seed);
  TokenBatch b;
  b.batch = batch;
  b.seq_len = seq;
  for (int i = 0; i < batch * seq; ++i) {
    b.inputs.push_back(static_cast<int32_t>(rng.NextBelow(m.vocab_size)));
    b.targets.push_back(static_cast<int32_t>(rng.NextBelow(m.vocab_size)));
  }
  return b;
}

OptimizerStepArgs Args(int step) {
  OptimizerStepArgs a;
  a.step = step;
  a.lr = 1e-3f;
  a.weight_decay = 0.1f;
  a.grad_clip = 1.f;
  return a;
}

// Weights and optimizer state (everything but the FP8 scaling state, which the step updates
// whether or not it is applied, as the CPU engine does).
bool SameTrainingState(const TensorMap& a, const TensorMap& b, std::string* first_diff) {
  for (const auto& [name, t] : a) {
    if (absl::StartsWith(name, "fp8.")) continue;
    auto it = b.find(name);
    if (it == b.end() || it->second.data.size() != t.data.size()) {
      *first_diff = name + " (missing or resized)";
      return false;
    }
    for (size_t i = 0; i < t.data.size(); ++i) {
      const float x = t.data[i], y = it->second.data[i];
      if (!(x == y || (std::isnan(x) && std::isnan(y)))) {
        *first_diff = name + "[" + std::to_string(i) + "]";
        return false;
      }
    }
  }
  return true;
}

class CudaEngineGuardTest : public ::testing::TestWithParam<const char*> {};

TEST_P(CudaEngineGuardTest, NonFiniteStepIsSkippedAndChangesNothing) {
  if (!HaveGpu()) GTEST_SKIP() << "no CUDA GPU on this machine";
  const ModelConfig m = Tiny();
  fp8d::v1::Recipe proto;
  proto.set_name(GetParam());
  // Every layer FP8 whatever the automatic size threshold (the tiny model's GEMMs are small).
  if (std::string(GetParam()) != "bf16") proto.mutable_policy()->set_min_gemm_dim(16);
  absl::StatusOr<RecipeConfig> recipe = ResolveRecipe(proto);
  ASSERT_TRUE(recipe.ok()) << recipe.status();
  auto engine = CudaEngine::Create(m, *recipe, /*seed=*/5, /*max_batch=*/4, /*max_seq_len=*/64);
  ASSERT_TRUE(engine.ok()) << engine.status();
  CudaEngine& e = **engine;
  if (recipe->is_fp8()) ASSERT_GT(e.PlanLayers(0).fp8_count(), 0);

  const TokenBatch batch = RandomBatch(m, 4, 64, 17);
  for (int s = 0; s < 2; ++s) {
    absl::StatusOr<StepResult> r = e.TrainStep({&batch, 1}, Args(s));
    ASSERT_TRUE(r.ok()) << r.status();
    ASSERT_FALSE(r->skipped) << "step " << s;
  }
  absl::StatusOr<TensorMap> good = e.SaveState();
  ASSERT_TRUE(good.ok()) << good.status();

  // An infinite embedding of the first token makes its activations, the loss and the gradients
  // non-finite. (An infinite Linear weight would not: FP8 casts saturate it to the format's
  // maximum, on the CPU engine as on the GPU.)
  TensorMap bad = *good;
  const std::string poisoned = "model.embed_tokens.weight";
  ASSERT_TRUE(bad.count(poisoned));
  bad[poisoned].data[static_cast<size_t>(batch.inputs[0]) * m.d_model] =
      std::numeric_limits<float>::infinity();
  ASSERT_TRUE(e.LoadState(bad).ok());
  absl::StatusOr<StepResult> r = e.TrainStep({&batch, 1}, Args(2));
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_TRUE(r->skipped);
  EXPECT_FALSE(std::isfinite(r->loss) && std::isfinite(r->grad_norm))
      << "loss " << r->loss << " grad_norm " << r->grad_norm;
  absl::StatusOr<TensorMap> after = e.SaveState();
  ASSERT_TRUE(after.ok()) << after.status();
  std::string diff;
  EXPECT_TRUE(SameTrainingState(bad, *after, &diff)) << "the skipped step changed " << diff;

  // Back to finite weights: the next step trains and moves the weights.
  ASSERT_TRUE(e.LoadState(*good).ok());
  r = e.TrainStep({&batch, 1}, Args(2));
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_FALSE(r->skipped);
  EXPECT_TRUE(std::isfinite(r->loss) && std::isfinite(r->grad_norm));
  after = e.SaveState();
  ASSERT_TRUE(after.ok());
  EXPECT_FALSE(SameTrainingState(*good, *after, &diff)) << "a finite step changed nothing";
}

INSTANTIATE_TEST_SUITE_P(Recipes, CudaEngineGuardTest,
                         ::testing::Values("bf16", "delayed", "current", "rowwise", "blockwise"),
                         [](const ::testing::TestParamInfo<const char*>& info) {
                           return std::string(info.param);
                         });

}  // namespace
}  // namespace fp8d::kernels
