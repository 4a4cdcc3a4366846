// Models, token batches, recipes, engines and the training loop shared by the CUDA engine's
// whole-model tests.
#pragma once

#include <cmath>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "core/cpu_engine.h"
#include "core/engine.h"
#include "core/model_config.h"
#include "core/recipe_config.h"
#include "core/rng.h"
#include "gtest/gtest.h"
#include "kernels/cuda_engine.h"
#include "fp8d/v1/job.pb.h"

namespace fp8d::kernels::engine_test {

inline ModelConfig Tiny() {
  fp8d::v1::ModelConfig p;
  p.set_preset("tiny");
  return *ResolveModelConfig(p);
}

// 124m's widths (d_model 768, 12 heads, d_ff 2048) with 2 layers and a smaller vocabulary, so
// that the CPU reference runs 20 steps in seconds.
inline ModelConfig Small124mShaped() {
  fp8d::v1::ModelConfig p;
  p.set_preset("124m");
  p.set_n_layer(2);
  p.set_vocab_size(4096);
  p.set_max_seq_len(64);
  return *ResolveModelConfig(p);
}

inline std::vector<TokenBatch> Batches(const ModelConfig& m, int count, int batch, int seq,
                                       uint64_t seed) {
  Rng rng(seed);
  std::vector<TokenBatch> out(count);
  for (TokenBatch& b : out) {
    b.batch = batch;
    b.seq_len = seq;
    // A learnable stream: each token is the previous one plus a small random step, so losses
    // fall and a wrong gradient shows up as a diverging curve.
    int32_t t = static_cast<int32_t>(rng.NextBelow(m.vocab_size));
    for (int i = 0; i < batch * seq + 1; ++i) {
      const int32_t next = static_cast<int32_t>((t + 1 + rng.NextBelow(3)) % m.vocab_size);
      if (i < batch * seq) {
        b.inputs.push_back(t);
        b.targets.push_back(next);
      }
      t = next;
    }
  }
  return out;
}

// Learning rates at which each model trains smoothly; at a rate where the loss oscillates, BF16
// rounding differences are amplified step after step and no tolerance would be meaningful.
constexpr float kTinyLr = 3e-3f;
constexpr float kSmall124mLr = 6e-4f;

inline OptimizerStepArgs Args(int step, float lr = kTinyLr) {
  OptimizerStepArgs a;
  a.step = step;
  a.lr = lr;
  a.weight_decay = 0.1f;
  a.grad_clip = 1.f;
  return a;
}

inline std::vector<StepResult> Train(Engine& e, const std::vector<TokenBatch>& batches, int first,
                                     int count, int micro = 1, float lr = kTinyLr) {
  std::vector<StepResult> out;
  for (int s = first; s < first + count; ++s) {
    std::vector<TokenBatch> mbs;
    for (int j = 0; j < micro; ++j) mbs.push_back(batches[(s * micro + j) % batches.size()]);
    absl::StatusOr<StepResult> r = e.TrainStep(mbs, Args(s, lr));
    EXPECT_TRUE(r.ok()) << r.status();
    if (!r.ok()) break;
    out.push_back(*r);
  }
  return out;
}

// FP8 recipes against the CPU engine's bit-exact FP8 emulation. The GPU rounds activations to
// BF16 before quantizing them and accumulates in a different order, so the bound is BF16's plus
// FP8's: a relative loss difference under 2% over 10 steps.
constexpr int kFp8Steps = 10;
constexpr float kFp8LossRelTol = 0.02f;

inline void ExpectFp8Tracks(const std::vector<StepResult>& gpu, const std::vector<StepResult>& cpu,
                            const std::string& what) {
  ASSERT_EQ(gpu.size(), cpu.size()) << what;
  for (size_t s = 0; s < gpu.size(); ++s) {
    EXPECT_FALSE(gpu[s].skipped) << what << " step " << s;
    EXPECT_TRUE(std::isfinite(gpu[s].loss)) << what << " step " << s;
    EXPECT_LT(std::fabs(gpu[s].loss - cpu[s].loss), kFp8LossRelTol * cpu[s].loss)
        << what << " step " << s << ": gpu " << gpu[s].loss << " cpu " << cpu[s].loss;
  }
  EXPECT_LT(gpu.back().loss, gpu.front().loss) << what;
}

// Every layer FP8 whatever the automatic size threshold (these models' GEMMs are small).
inline RecipeConfig Recipe(RecipeKind kind) {
  RecipeConfig r;
  r.kind = kind;
  r.policy.min_gemm_dim = 16;
  return r;
}

inline constexpr RecipeKind kGpuFp8Recipes[] = {RecipeKind::kDelayed, RecipeKind::kCurrent,
                                                RecipeKind::kRowwise, RecipeKind::kBlockwise};

inline std::unique_ptr<CudaEngine> GpuWith(const ModelConfig& m, const RecipeConfig& r,
                                           int batch, int seq, uint64_t seed = 7,
                                           const CudaEngineOptions& options = {}) {
  auto e = CudaEngine::Create(m, r, seed, batch, seq, options);
  EXPECT_TRUE(e.ok()) << e.status();
  return e.ok() ? std::move(*e) : nullptr;
}

inline std::unique_ptr<CpuEngine> CpuWith(const ModelConfig& m, const RecipeConfig& r,
                                          uint64_t seed = 7) {
  auto e = CpuEngine::Create(m, r, seed);
  EXPECT_TRUE(e.ok()) << e.status();
  return e.ok() ? std::move(*e) : nullptr;
}

}  // namespace fp8d::kernels::engine_test
