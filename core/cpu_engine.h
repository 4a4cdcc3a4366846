// CpuEngine: the FP32 reference implementation of Engine, and the test oracle for CudaEngine.
//
// - Precision: every tensor and every op is FP32. The `bf16` recipe on the CPU is plain FP32 (no
//   BF16 rounding is emulated); FP8 recipes emulate FP8 bit-exactly inside the GEMM layers the
//   plan selects (core/ref/fp8_linear.h describes how each operand of each GEMM is quantized).
// - Determinism: single-threaded with a fixed reduction order, so the same seed, batches and
//   arguments give bit-identical results run to run.
// - Hardware model: the CPU mirrors a Hopper GPU's FP8 capabilities, so `mxfp8` (Blackwell
//   only) is FAILED_PRECONDITION from Create and SetRecipe.
// - Skipped steps: a non-finite loss or gradient norm leaves parameters, AdamW moments and the
//   optimizer step count untouched, but delayed-scaling amaxes are still pushed and scales
//   recomputed (ComputeScale keeps the previous scale for a NaN/inf amax), so that scales can
//   recover after an overflow as in Transformer Engine.
// - State: SaveState writes every weight, "optim.m.<param>", "optim.v.<param>", "optim.step" [1]
//   and, under the delayed recipe only, "fp8.<layer>.<role>.scale" [1] and
//   "fp8.<layer>.<role>.amax_history" [amax_history_len] for every GEMM layer and role (input,
//   weight, grad_output). LoadState requires exactly the tensors SaveState would write (fp8.*
//   tensors are ignored under recipes other than delayed) and rejects missing, unknown or
//   misshapen tensors with INVALID_ARGUMENT, changing nothing.
// - Micro-batches: each micro-batch's mean loss is scaled by 1 / n; the reported loss is the mean
//   of the micro-batch means (the mean over all tokens when micro-batches are equal in size).
#pragma once

#include <cstdint>
#include <memory>
#include <vector>

#include "absl/status/statusor.h"
#include "core/cpu_fp8_state.h"
#include "core/cpu_model.h"
#include "core/engine.h"
#include "core/model_weights.h"

namespace fp8d {

class CpuEngine : public Engine {
 public:
  // Starts from InitWeights(model, seed), zero moments, step 0. `model` and `recipe` must be
  // resolved (ResolveModelConfig, ResolveRecipe).
  static absl::StatusOr<std::unique_ptr<CpuEngine>> Create(const ModelConfig& model,
                                                           const RecipeConfig& recipe,
                                                           uint64_t seed);

  const DeviceInfo& device() const override { return device_; }
  const ModelConfig& model() const override { return config_; }

  absl::StatusOr<StepResult> TrainStep(absl::Span<const TokenBatch> micro_batches,
                                       const OptimizerStepArgs& args) override;
  // Runs in the precision the next TrainStep would use (the plan of the step after the last
  // one trained); records no amax.
  absl::StatusOr<float> EvalLoss(const TokenBatch& batch) override;

  absl::Status SetRecipe(const RecipeConfig& recipe, fp8d::v1::AmaxHandling handling) override;
  const RecipeConfig& recipe() const override { return recipe_; }
  // Plans with the tokens per micro-batch of the last TrainStep (max_seq_len before the first);
  // the CPU's automatic minimum GEMM dimension is 0.
  LayerPlan PlanLayers(int64_t step) const override;
  // Stats merged over the last step's micro-batches. Scale is the one the step quantized with
  // (delayed), the one the step's amax gives (current), or 0 (row/block-wise); history is the
  // delayed window after this step's push. AmaxRecord.step = the step's index + 1.
  fp8d::v1::AmaxRecord AmaxTelemetry() const override;

  absl::StatusOr<TensorMap> SaveState() const override;
  absl::Status LoadState(const TensorMap& state) override;
  int64_t MemoryBytes() const override;

 private:
  CpuEngine(const ModelConfig& model, const RecipeConfig& recipe, uint64_t seed);
  absl::Status CheckBatch(const TokenBatch& batch, const std::string& field) const;

  ModelConfig config_;
  RecipeConfig recipe_;
  DeviceInfo device_;
  std::vector<ParamSpec> specs_;
  TensorMap weights_, grads_, adam_m_, adam_v_;
  int64_t optim_step_ = 0;  // AdamW updates applied (skipped steps excluded)
  int64_t next_step_ = 0;   // index after the last TrainStep's, for EvalLoss's plan
  int64_t tokens_per_micro_batch_ = 0;
  CpuModel cpu_model_;
  CpuFp8State fp8_;
};

}  // namespace fp8d
