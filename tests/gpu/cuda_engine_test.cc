// The CUDA engine against the CPU reference engine on whole models: same initial weights, same
// batches, losses tracked within BF16 tolerance for 20 steps; run-to-run bit-identity; exact
// resume from SaveState; checkpoints moving between the engines; the errors a user sees.
#include "kernels/cuda_engine.h"

#include <cuda_runtime.h>

#include <cmath>
#include <memory>
#include <vector>

#include "absl/strings/match.h"
#include "core/cpu_engine.h"
#include "core/model_config.h"
#include "core/rng.h"
#include "gtest/gtest.h"

namespace fp8d::kernels {
namespace {

bool HaveGpu() {
  int n = 0;
  return cudaGetDeviceCount(&n) == cudaSuccess && n > 0;
}

#define SKIP_WITHOUT_GPU() \
  if (!HaveGpu()) GTEST_SKIP() << "no CUDA GPU on this machine"

// BF16 activations and weight copies against an FP32 reference: a few parts in a thousand per
// op, compounding over steps. The bound is on |gpu - cpu| <= rel * cpu + abs.
constexpr float kLossRelTol = 0.02f;
constexpr float kLossAbsTol = 0.02f;
constexpr int kSteps = 20;

ModelConfig Tiny() {
  fp8d::v1::ModelConfig p;
  p.set_preset("tiny");
  return *ResolveModelConfig(p);
}

// 124m's widths (d_model 768, 12 heads, d_ff 2048) with 2 layers and a smaller vocabulary, so
// that the CPU reference runs 20 steps in seconds.
ModelConfig Small124mShaped() {
  fp8d::v1::ModelConfig p;
  p.set_preset("124m");
  p.set_n_layer(2);
  p.set_vocab_size(4096);
  p.set_max_seq_len(64);
  return *ResolveModelConfig(p);
}

std::vector<TokenBatch> Batches(const ModelConfig& m, int count, int batch, int seq,
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

OptimizerStepArgs Args(int step, float lr = kTinyLr) {
  OptimizerStepArgs a;
  a.step = step;
  a.lr = lr;
  a.weight_decay = 0.1f;
  a.grad_clip = 1.f;
  return a;
}

std::vector<StepResult> Train(Engine& e, const std::vector<TokenBatch>& batches, int first,
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

void ExpectTracks(const std::vector<StepResult>& gpu, const std::vector<StepResult>& cpu) {
  ASSERT_EQ(gpu.size(), cpu.size());
  for (size_t s = 0; s < gpu.size(); ++s) {
    EXPECT_FALSE(gpu[s].skipped) << "step " << s;
    EXPECT_NEAR(gpu[s].loss, cpu[s].loss, kLossRelTol * cpu[s].loss + kLossAbsTol)
        << "step " << s;
    EXPECT_NEAR(gpu[s].grad_norm, cpu[s].grad_norm, 0.05f * cpu[s].grad_norm + 1e-3f)
        << "step " << s;
  }
  // Training happened: the curve fell on both.
  EXPECT_LT(gpu.back().loss, gpu.front().loss - 0.1f);
}

std::unique_ptr<CudaEngine> Gpu(const ModelConfig& m, int batch, int seq, uint64_t seed = 7) {
  auto e = CudaEngine::Create(m, RecipeConfig{}, seed, batch, seq);
  EXPECT_TRUE(e.ok()) << e.status();
  return e.ok() ? std::move(*e) : nullptr;
}

std::unique_ptr<CpuEngine> Cpu(const ModelConfig& m, uint64_t seed = 7) {
  auto e = CpuEngine::Create(m, RecipeConfig{}, seed);
  EXPECT_TRUE(e.ok()) << e.status();
  return e.ok() ? std::move(*e) : nullptr;
}

TEST(CudaEngineTest, TinyTracksTheCpuEngineFor20Steps) {
  SKIP_WITHOUT_GPU();
  const ModelConfig m = Tiny();
  const auto batches = Batches(m, 4, 4, 64, 11);
  auto gpu = Gpu(m, 4, 64);
  auto cpu = Cpu(m);
  ASSERT_TRUE(gpu && cpu);
  ExpectTracks(Train(*gpu, batches, 0, kSteps), Train(*cpu, batches, 0, kSteps));
}

TEST(CudaEngineTest, TinyWithMicroBatchesTracksTheCpuEngine) {
  SKIP_WITHOUT_GPU();
  const ModelConfig m = Tiny();
  const auto batches = Batches(m, 6, 2, 32, 12);
  auto gpu = Gpu(m, 2, 32);
  auto cpu = Cpu(m);
  ASSERT_TRUE(gpu && cpu);
  ExpectTracks(Train(*gpu, batches, 0, 10, 3), Train(*cpu, batches, 0, 10, 3));
}

TEST(CudaEngineTest, Small124mShapedModelTracksTheCpuEngineFor20Steps) {
  SKIP_WITHOUT_GPU();
  const ModelConfig m = Small124mShaped();
  const auto batches = Batches(m, 4, 1, 32, 13);
  auto gpu = Gpu(m, 1, 32);
  auto cpu = Cpu(m);
  ASSERT_TRUE(gpu && cpu);
  ExpectTracks(Train(*gpu, batches, 0, kSteps, 1, kSmall124mLr),
               Train(*cpu, batches, 0, kSteps, 1, kSmall124mLr));
}

TEST(CudaEngineTest, TwoGpuRunsGiveBitIdenticalLosses) {
  SKIP_WITHOUT_GPU();
  const ModelConfig m = Tiny();
  const auto batches = Batches(m, 4, 4, 64, 21);
  auto a = Gpu(m, 4, 64);
  auto b = Gpu(m, 4, 64);
  ASSERT_TRUE(a && b);
  const auto ra = Train(*a, batches, 0, kSteps);
  const auto rb = Train(*b, batches, 0, kSteps);
  ASSERT_EQ(ra.size(), rb.size());
  for (size_t s = 0; s < ra.size(); ++s) {
    EXPECT_EQ(ra[s].loss, rb[s].loss) << "step " << s;
    EXPECT_EQ(ra[s].grad_norm, rb[s].grad_norm) << "step " << s;
  }
}

TEST(CudaEngineTest, ResumeFromSavedStateGivesIdenticalLosses) {
  SKIP_WITHOUT_GPU();
  const ModelConfig m = Tiny();
  const auto batches = Batches(m, 4, 4, 64, 31);
  auto a = Gpu(m, 4, 64);
  ASSERT_TRUE(a);
  Train(*a, batches, 0, 10);
  absl::StatusOr<TensorMap> state = a->SaveState();
  ASSERT_TRUE(state.ok()) << state.status();
  const auto straight = Train(*a, batches, 10, 10);

  auto b = Gpu(m, 4, 64, /*seed=*/999);  // different initial weights, overwritten by the load
  ASSERT_TRUE(b);
  ASSERT_TRUE(b->LoadState(*state).ok());
  const auto resumed = Train(*b, batches, 10, 10);
  ASSERT_EQ(straight.size(), resumed.size());
  for (size_t s = 0; s < straight.size(); ++s) {
    EXPECT_EQ(straight[s].loss, resumed[s].loss) << "step " << 10 + s;
  }
}

TEST(CudaEngineTest, CheckpointsMoveBetweenCpuAndGpu) {
  SKIP_WITHOUT_GPU();
  const ModelConfig m = Tiny();
  const auto batches = Batches(m, 4, 4, 64, 41);
  auto cpu = Cpu(m);
  ASSERT_TRUE(cpu);
  Train(*cpu, batches, 0, 5);
  absl::StatusOr<TensorMap> cpu_state = cpu->SaveState();
  ASSERT_TRUE(cpu_state.ok());

  auto gpu = Gpu(m, 4, 64, /*seed=*/5);
  ASSERT_TRUE(gpu);
  ASSERT_TRUE(gpu->LoadState(*cpu_state).ok());
  // Same tensors, same names, same values back out (FP32 master weights are exact).
  absl::StatusOr<TensorMap> gpu_state = gpu->SaveState();
  ASSERT_TRUE(gpu_state.ok());
  ASSERT_EQ(gpu_state->size(), cpu_state->size());
  for (const auto& [name, t] : *cpu_state) {
    auto it = gpu_state->find(name);
    ASSERT_NE(it, gpu_state->end()) << name;
    EXPECT_EQ(it->second.shape, t.shape) << name;
    EXPECT_EQ(it->second.data, t.data) << name;
  }
  absl::StatusOr<float> g = gpu->EvalLoss(batches[0]);
  absl::StatusOr<float> c = cpu->EvalLoss(batches[0]);
  ASSERT_TRUE(g.ok() && c.ok());
  EXPECT_NEAR(*g, *c, kLossRelTol * *c + kLossAbsTol);

  // And back: a GPU checkpoint loads into the CPU engine.
  Train(*gpu, batches, 5, 3);
  gpu_state = gpu->SaveState();
  ASSERT_TRUE(gpu_state.ok());
  EXPECT_TRUE(cpu->LoadState(*gpu_state).ok());
}

TEST(CudaEngineTest, Fp8RecipesAreFailedPrecondition) {
  SKIP_WITHOUT_GPU();
  RecipeConfig delayed;
  delayed.kind = RecipeKind::kDelayed;
  auto e = CudaEngine::Create(Tiny(), delayed, 1, 2, 16);
  ASSERT_FALSE(e.ok());
  EXPECT_EQ(e.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_TRUE(absl::StrContains(e.status().message(), "not available yet")) << e.status();

  RecipeConfig mx;
  mx.kind = RecipeKind::kMxfp8;
  auto g = CudaEngine::Create(Tiny(), mx, 1, 2, 16);
  ASSERT_FALSE(g.ok());
  EXPECT_EQ(g.status().code(), absl::StatusCode::kFailedPrecondition);
  int major = 0;
  cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, 0);
  if (major < 10) EXPECT_TRUE(absl::StrContains(g.status().message(), "sm_100")) << g.status();
}

TEST(CudaEngineTest, JobTooLargeForTheGpuIsResourceExhaustedBeforeAllocating) {
  SKIP_WITHOUT_GPU();
  fp8d::v1::ModelConfig p;
  p.set_preset("3b");
  const ModelConfig m = *ResolveModelConfig(p);
  size_t free_before = 0, total = 0;
  cudaMemGetInfo(&free_before, &total);
  auto e = CudaEngine::Create(m, RecipeConfig{}, 1, 256, 2048);
  ASSERT_FALSE(e.ok());
  EXPECT_EQ(e.status().code(), absl::StatusCode::kResourceExhausted);
  EXPECT_TRUE(absl::StrContains(e.status().message(), "GiB")) << e.status();
  size_t free_after = 0;
  cudaMemGetInfo(&free_after, &total);
  EXPECT_GE(free_after + (size_t{64} << 20), free_before);  // nothing was kept
}

TEST(CudaEngineTest, BadBatchesAreInvalidArgument) {
  SKIP_WITHOUT_GPU();
  const ModelConfig m = Tiny();
  auto gpu = Gpu(m, 2, 16);
  ASSERT_TRUE(gpu);
  TokenBatch b = Batches(m, 1, 2, 16, 1)[0];
  b.inputs[3] = m.vocab_size;
  EXPECT_EQ(gpu->TrainStep({&b, 1}, Args(0)).status().code(), absl::StatusCode::kInvalidArgument);
  TokenBatch big = Batches(m, 1, 4, 16, 1)[0];  // more rows than the engine was sized for
  EXPECT_EQ(gpu->EvalLoss(big).status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(gpu->TrainStep({}, Args(0)).status().code(), absl::StatusCode::kInvalidArgument);
}

TEST(CudaEngineTest, ReportsTheGpu) {
  SKIP_WITHOUT_GPU();
  absl::StatusOr<DeviceInfo> info = CudaEngine::Probe();
  ASSERT_TRUE(info.ok());
  EXPECT_EQ(info->engine, "cuda");
  EXPECT_FALSE(info->name.empty());
  EXPECT_GT(info->memory_bytes, 0);
  EXPECT_EQ(info->supported_recipes, std::vector<std::string>{"bf16"});
}

}  // namespace
}  // namespace fp8d::kernels
