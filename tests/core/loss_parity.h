// FP8 loss parity against BF16: trains one model from the same initial weights on the same
// batches under each recipe and compares a final loss that is not noisy (the eval loss on the
// held-out split). Shared by the CPU check of this machinery (tests/core/loss_parity_test.cc:
// tiny model, runs with the unit tests) and the GPU test on real text
// (tests/gpu/loss_parity_test.cc: 124m-shaped model on the CUDA engine).
//
// The loop is the trainer's (core/trainer.cc, RunStep and Evaluate): micro-batches from the
// DataLoader in its seeded order, the learning rate from LrSchedule, AdamW arguments from the
// resolved JobSpec, and an eval that averages EvalLoss over the first `eval_batches` validation
// batches. It leaves out the trainer's checkpoints: a 124m checkpoint is about 1 GB hashed with
// SHA-256, and one per recipe would add about half again to the GPU test's time.
#pragma once

#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "core/data_loader.h"
#include "core/engine.h"
#include "core/job_spec.h"
#include "core/lr_schedule.h"
#include "core/model_config.h"
#include "core/recipe_config.h"
#include "fp8d/v1/job.pb.h"
#include "gtest/gtest.h"

namespace fp8d::parity {

// Steps at the end whose mean train loss is reported beside the eval loss.
inline constexpr int kTailSteps = 20;

// One recipe's run.
struct RecipeRun {
  std::string recipe;
  std::vector<float> losses;       // train loss of every step, in order
  float initial_eval_loss = 0.f;   // held-out split, before the first step
  float eval_loss = 0.f;           // held-out split, after the last step
  float tail_train_loss = 0.f;     // mean train loss of the last kTailSteps steps
  int64_t skipped_steps = 0;
  int fp8_layers = 0;              // at the last step
  int total_layers = 0;
  double seconds = 0.0;            // training steps only (no engine creation, no eval)
  int64_t tokens_per_step = 0;
};

// Creates the engine for one run: same model and seed for every recipe, so every run starts
// from the same weights.
using EngineFactory = std::function<absl::StatusOr<std::unique_ptr<Engine>>(
    const ModelConfig& model, const RecipeConfig& recipe, uint64_t seed, int batch,
    int seq_len)>;

// The mean EvalLoss over the first `eval_batches` validation batches, as the trainer's eval.
inline absl::StatusOr<float> HeldOutLoss(Engine& engine, const DataLoader& data,
                                         int eval_batches) {
  const int64_t n = std::min<int64_t>(eval_batches, data.NumValBatches());
  if (n <= 0) {
    return absl::FailedPreconditionError(
        "the held-out split holds no full validation batch: use more text or a smaller "
        "batch_size x seq_len");
  }
  double sum = 0;
  for (int64_t i = 0; i < n; ++i) {
    absl::StatusOr<float> loss = engine.EvalLoss(data.ValBatch(i));
    if (!loss.ok()) return loss.status();
    sum += *loss;
  }
  return static_cast<float>(sum / n);
}

// Trains `spec` (defaults filled in here; `spec.recipe().name()` picks the recipe) with data
// paths relative to `data_root`, from a fresh engine.
inline absl::StatusOr<RecipeRun> TrainRecipe(const fp8d::v1::JobSpec& spec,
                                             const std::string& data_root,
                                             const EngineFactory& make_engine) {
  absl::StatusOr<fp8d::v1::JobSpec> resolved = ResolveJobSpec(spec);
  if (!resolved.ok()) return resolved.status();
  const fp8d::v1::JobSpec& s = *resolved;
  absl::StatusOr<ModelConfig> model = ResolveModelConfig(s.model());
  if (!model.ok()) return model.status();
  absl::StatusOr<RecipeConfig> recipe = ResolveRecipe(s.recipe());
  if (!recipe.ok()) return recipe.status();
  absl::StatusOr<std::unique_ptr<Engine>> engine =
      make_engine(*model, *recipe, s.seed(), s.batch_size(), s.seq_len());
  if (!engine.ok()) return engine.status();
  absl::StatusOr<std::unique_ptr<DataLoader>> data = DataLoader::Open(
      s.data(), data_root, model->vocab_size, s.batch_size(), s.seq_len(), s.seed());
  if (!data.ok()) return data.status();

  RecipeRun run;
  run.recipe = s.recipe().name();
  run.tokens_per_step = int64_t{s.batch_size()} * s.seq_len() * s.grad_accum();
  absl::StatusOr<float> initial = HeldOutLoss(**engine, **data, s.eval_batches());
  if (!initial.ok()) return initial.status();
  run.initial_eval_loss = *initial;

  const LrSchedule schedule(s.optimizer().lr(), s.optimizer().min_lr(),
                            s.optimizer().warmup_steps(), s.steps());
  const auto start = std::chrono::steady_clock::now();
  for (int64_t step = 0; step < s.steps(); ++step) {
    std::vector<TokenBatch> micro_batches;
    for (int i = 0; i < s.grad_accum(); ++i) micro_batches.push_back((*data)->NextTrainBatch());
    OptimizerStepArgs args;
    args.step = step;
    args.lr = schedule.At(step);
    args.beta1 = s.optimizer().beta1();
    args.beta2 = s.optimizer().beta2();
    args.eps = s.optimizer().eps();
    args.weight_decay = s.optimizer().weight_decay();
    args.grad_clip = s.optimizer().grad_clip();
    absl::StatusOr<StepResult> r = (*engine)->TrainStep(micro_batches, args);
    if (!r.ok()) {
      return absl::Status(r.status().code(), absl::StrCat("recipe ", run.recipe, ", step ",
                                                          step + 1, ": ", r.status().message()));
    }
    run.losses.push_back(r->loss);
    run.skipped_steps += r->skipped;
  }
  // TrainStep returns after reading the loss back, so the device has finished every step.
  run.seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  const LayerPlan plan = (*engine)->PlanLayers(s.steps() - 1);
  run.fp8_layers = plan.fp8_count();
  run.total_layers = static_cast<int>(plan.layers.size());

  absl::StatusOr<float> final_loss = HeldOutLoss(**engine, **data, s.eval_batches());
  if (!final_loss.ok()) return final_loss.status();
  run.eval_loss = *final_loss;
  const int tail = std::min<int>(kTailSteps, static_cast<int>(run.losses.size()));
  double sum = 0;
  for (int i = static_cast<int>(run.losses.size()) - tail; i < static_cast<int>(run.losses.size());
       ++i) {
    sum += run.losses[i];
  }
  run.tail_train_loss = tail > 0 ? static_cast<float>(sum / tail) : 0.f;
  return run;
}

// (x - reference) / reference.
inline double RelDiff(double x, double reference) { return (x - reference) / reference; }

// Every step's loss finite, no step skipped.
inline ::testing::AssertionResult TrainedCleanly(const RecipeRun& run) {
  for (size_t i = 0; i < run.losses.size(); ++i) {
    if (!std::isfinite(run.losses[i])) {
      return ::testing::AssertionFailure()
             << run.recipe << ": loss of step " << i + 1 << " is " << run.losses[i];
    }
  }
  if (run.skipped_steps != 0) {
    return ::testing::AssertionFailure()
           << run.recipe << ": " << run.skipped_steps << " steps skipped (non-finite loss or "
           << "gradient)";
  }
  if (!std::isfinite(run.eval_loss)) {
    return ::testing::AssertionFailure() << run.recipe << ": eval loss " << run.eval_loss;
  }
  return ::testing::AssertionSuccess();
}

// |run.eval_loss - bf16.eval_loss| / bf16.eval_loss <= rel_tol.
// The FP8 run's eval loss is at most `worse_tol` (relative) above bf16's and at most `better_tol`
// below it: parity means FP8 costs no accuracy; a loss far below bf16's would mean the two runs
// did not compute comparable things.
inline ::testing::AssertionResult EvalLossNoWorse(const RecipeRun& run, const RecipeRun& bf16,
                                                  double worse_tol, double better_tol) {
  const double rel = RelDiff(run.eval_loss, bf16.eval_loss);
  if (std::isfinite(rel) && rel <= worse_tol && rel >= -better_tol) {
    return ::testing::AssertionSuccess();
  }
  return ::testing::AssertionFailure()
         << run.recipe << " eval loss " << run.eval_loss << " vs bf16 " << bf16.eval_loss
         << ": relative difference " << absl::StrFormat("%+.3f%%", 100 * rel) << ", allowed "
         << absl::StrFormat("-%.2f%% to +%.2f%%", 100 * better_tol, 100 * worse_tol);
}

inline ::testing::AssertionResult EvalLossWithin(const RecipeRun& run, const RecipeRun& bf16,
                                                 double rel_tol) {
  const double rel = RelDiff(run.eval_loss, bf16.eval_loss);
  if (std::isfinite(rel) && std::fabs(rel) <= rel_tol) return ::testing::AssertionSuccess();
  return ::testing::AssertionFailure()
         << run.recipe << " eval loss " << run.eval_loss << " vs bf16 " << bf16.eval_loss
         << ": relative difference " << absl::StrFormat("%+.3f%%", 100 * rel)
         << ", allowed +-" << absl::StrFormat("%.2f%%", 100 * rel_tol);
}

// A table of every run against the first (bf16): eval and tail train loss, their relative
// differences, FP8 layers and wall time.
inline std::string ParityTable(const std::vector<RecipeRun>& runs) {
  std::string out = absl::StrFormat(
      "%-10s %9s %9s %9s %10s %9s %7s %8s %9s\n", "recipe", "eval0", "eval", "eval_rel",
      "tail_train", "tail_rel", "fp8", "time_s", "ms/step");
  if (runs.empty()) return out;
  const RecipeRun& ref = runs.front();
  for (const RecipeRun& r : runs) {
    const double ms = r.losses.empty() ? 0.0 : 1e3 * r.seconds / r.losses.size();
    absl::StrAppendFormat(&out, "%-10s %9.4f %9.4f %+8.3f%% %10.4f %+8.3f%% %3d/%-3d %8.1f %9.1f\n",
                          r.recipe, r.initial_eval_loss, r.eval_loss,
                          100 * RelDiff(r.eval_loss, ref.eval_loss), r.tail_train_loss,
                          100 * RelDiff(r.tail_train_loss, ref.tail_train_loss), r.fp8_layers,
                          r.total_layers, r.seconds, ms);
  }
  return out;
}

// `FP8D_PARITY_TEXT`-style path to (data_root, train) for DataSpec: the file's folder is the
// data root, so the loader's path confinement accepts it.
struct TextLocation {
  std::string data_root;
  std::string file_name;
};
inline TextLocation LocateText(const std::string& path) {
  const std::filesystem::path p = std::filesystem::absolute(path);
  return {p.parent_path().string(), p.filename().string()};
}

}  // namespace fp8d::parity
