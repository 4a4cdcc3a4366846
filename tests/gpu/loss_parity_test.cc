// FP8 loss parity on real text (DESIGN: final loss within 1% of BF16 after the same steps on the
// same data): a 124m-shaped model with the byte-level tokenizer trains 300 steps of B16 x T1024
// on the CUDA engine under bf16, delayed, current, rowwise and blockwise, from the same initial
// weights on the same batches (core's DataLoader in its seeded order), with AdamW, linear
// warm-up and cosine decay as a user would run it. The held-out eval loss after the last step
// is compared with bf16's; a table of every run goes to stdout for the run's log.
//
// The text is a file named by FP8D_PARITY_TEXT (deploy/gpu-bundle.sh builds bundle/data/text.txt
// from English text on the build machine and bundle/run-gpu-suite.sh exports the variable).
// Without it, or without a GPU, the test says SKIPPED and why.
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <memory>
#include <string>
#include <vector>

#include "kernels/cuda_engine.h"
#include "tests/core/loss_parity.h"
#include "tests/gpu/gpu_test_util.h"

namespace fp8d::parity {
namespace {

constexpr char kTextVariable[] = "FP8D_PARITY_TEXT";

// The run: 300 steps of 16 x 1024 tokens (4.9M bytes, less than one epoch of the bundle's
// ~7 MB training split, so no batch repeats), GPT-2 small's peak rate with 10% warm-up.
constexpr int kSteps = 300;
constexpr int kBatch = 16;
constexpr int kSeqLen = 1024;
constexpr float kPeakLr = 6e-4f;
constexpr int kWarmupSteps = 30;
// 8 x 16 x 1024 = 131k held-out bytes: the same batches for every recipe, so the comparison
// carries no sampling noise, only the difference the recipe made to the weights.
constexpr int kEvalBatches = 8;
constexpr int kAllLayersMinGemmDim = 16;

// DESIGN's target for the per-tensor recipes: FP8 ends no more than 1% above bf16. Below bf16 is
// allowed up to kMaxBetterRelTol: on the H100 (2026-11-22) every FP8 recipe ended slightly below
// bf16 (delayed -0.11%, current -1.47%, rowwise -0.94%, blockwise -1.34%), which is the noise of
// one 300-step run, not a cost of FP8.
constexpr double kParityRelTol = 0.01;
constexpr double kMaxBetterRelTol = 0.03;
// Rowwise and 1x128 blockwise scale finer than per tensor and are not held to DESIGN's target;
// twice it still fails a wrong scale layout or a broken gradient path (those show as several
// percent or a diverging run), while leaving room for E4M3 gradients (no E5M2 range) at this
// short horizon.
constexpr double kFineScaledRelTol = 0.02;
// 300 steps take the byte-level model from ln 256 = 5.5 nats to well under 2.5; a run that
// ends above 60% of where it started has not trained.
constexpr double kLearnedFraction = 0.6;
constexpr double kInitialEvalRelTol = 0.02;

fp8d::v1::JobSpec Spec(const std::string& train, const std::string& recipe) {
  fp8d::v1::JobSpec spec;
  spec.set_name("loss-parity");
  spec.mutable_model()->set_preset("124m");
  spec.mutable_model()->set_vocab_size(256);  // byte-level text
  spec.mutable_data()->set_train(train);
  spec.mutable_optimizer()->set_lr(kPeakLr);
  spec.mutable_optimizer()->set_warmup_steps(kWarmupSteps);
  spec.mutable_optimizer()->set_weight_decay(0.1f);
  spec.mutable_optimizer()->set_grad_clip(1.f);
  spec.set_steps(kSteps);
  spec.set_batch_size(kBatch);
  spec.set_seq_len(kSeqLen);
  spec.set_eval_batches(kEvalBatches);
  spec.set_seed(1337);
  spec.mutable_recipe()->set_name(recipe);
  // Every GEMM but the LM head in FP8, whatever the automatic size threshold would keep BF16
  // for speed: parity is asked of the numerics, so all the layers that can run FP8 do (16 is
  // the smallest size the FP8 GEMMs take).
  spec.mutable_recipe()->mutable_policy()->set_min_gemm_dim(kAllLayersMinGemmDim);
  return spec;
}

EngineFactory CudaEngines() {
  return [](const ModelConfig& model, const RecipeConfig& recipe, uint64_t seed, int batch,
            int seq_len) -> absl::StatusOr<std::unique_ptr<Engine>> {
    absl::StatusOr<std::unique_ptr<kernels::CudaEngine>> e =
        kernels::CudaEngine::Create(model, recipe, seed, batch, seq_len);
    if (!e.ok()) return e.status();
    return std::unique_ptr<Engine>(*std::move(e));
  };
}

TEST(LossParityTest, DelayedAndCurrentEndAtMostOnePercentAboveBf16On124mRealText) {
  const char* text_path = std::getenv(kTextVariable);
  if (text_path == nullptr || *text_path == '\0') {
    GTEST_SKIP() << kTextVariable << " is not set: point it at a few MB of English text "
                 << "(deploy/gpu-bundle.sh builds bundle/data/text.txt and the bundle's "
                 << "run-gpu-suite.sh exports it)";
  }
  if (!std::filesystem::is_regular_file(text_path)) {
    GTEST_SKIP() << kTextVariable << "=" << text_path << ": no such file";
  }
  FP8D_REQUIRE_GPU();

  const TextLocation text = LocateText(text_path);
  std::vector<RecipeRun> runs;
  for (const char* recipe : {"bf16", "delayed", "current", "rowwise", "blockwise"}) {
    absl::StatusOr<RecipeRun> run =
        TrainRecipe(Spec(text.file_name, recipe), text.data_root, CudaEngines());
    // A recipe that cannot run fails the test; the others still run and are compared.
    if (!run.ok()) {
      ADD_FAILURE() << recipe << ": " << run.status();
      continue;
    }
    std::printf("loss parity: %-9s eval %.4f after %d steps in %.1f s\n", recipe, run->eval_loss,
                kSteps, run->seconds);
    std::fflush(stdout);
    runs.push_back(*std::move(run));
  }
  std::printf("loss parity, 124m-shaped (vocab 256), %d steps of %dx%d tokens on %s:\n%s", kSteps,
              kBatch, kSeqLen, text_path, ParityTable(runs).c_str());

  ASSERT_FALSE(runs.empty());
  ASSERT_EQ(runs[0].recipe, "bf16") << "no bf16 run to compare with";
  const RecipeRun& bf16 = runs[0];
  EXPECT_LT(bf16.eval_loss, kLearnedFraction * bf16.initial_eval_loss);
  EXPECT_EQ(bf16.fp8_layers, 0);
  for (const RecipeRun& run : runs) {
    EXPECT_TRUE(TrainedCleanly(run));
    EXPECT_EQ(run.losses.size(), static_cast<size_t>(kSteps)) << run.recipe;
    // Same initial weights under every recipe: before the first step the held-out loss is
    // near ln 256 under each (evaluation quantizes like the next training step, which moves a
    // near-uniform prediction by far less than this).
    EXPECT_NEAR(run.initial_eval_loss, bf16.initial_eval_loss,
                kInitialEvalRelTol * bf16.initial_eval_loss)
        << run.recipe;
  }
  for (size_t i = 1; i < runs.size(); ++i) {
    const RecipeRun& run = runs[i];
    // All 48 block GEMMs run FP8; the LM head stays BF16 by the default policy.
    EXPECT_EQ(run.fp8_layers, 48) << run.recipe;
    const bool per_tensor = run.recipe == "delayed" || run.recipe == "current";
    EXPECT_TRUE(EvalLossNoWorse(run, bf16, per_tensor ? kParityRelTol : kFineScaledRelTol,
                                kMaxBetterRelTol));
  }
}

}  // namespace
}  // namespace fp8d::parity
