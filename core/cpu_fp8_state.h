// The CPU engine's FP8 scaling state: per (GEMM layer, role) delayed-scaling amax histories and
// scales, the operand quantization of every FP8 GEMM for a step, the last step's telemetry, and
// the state's checkpoint tensors.
//
// Delayed scaling follows Transformer Engine: a step quantizes with the scales computed after
// the previous step (1.0 initially); each tensor's amax is the max over the step's micro-batches;
// after the step the amax is pushed into the tensor's history and
// scale = ComputeScale(history.Reduced(), fp8_max, margin, previous scale).
#pragma once

#include <array>
#include <cstdint>
#include <string>
#include <vector>

#include "core/cpu_model.h"
#include "core/engine.h"
#include "core/fp8_scaling.h"
#include "core/model_config.h"
#include "core/recipe_config.h"
#include "core/ref/fp8_linear.h"
#include "core/tensor_map.h"
#include "fp8d/v1/recipe.pb.h"
#include "fp8d/v1/telemetry.pb.h"

namespace fp8d {

class CpuFp8State {
 public:
  CpuFp8State(const ModelConfig& model, const RecipeConfig& recipe);

  // Switches recipe. Delayed -> delayed with AMAX_KEEP (or unspecified) keeps every history
  // (resized to the new window) and recomputes each scale from it under the new format, margin
  // and algorithm; AMAX_RESET, or entering delayed from another recipe, starts from zero
  // histories and scales of 1.0. Other recipes hold no scaling state.
  void SetRecipe(const RecipeConfig& recipe, fp8d::v1::AmaxHandling handling);

  // Operand quantization of each GEMM layer (indexed like GemmLayerNames) for a training step
  // under `plan`. Clears the step's stats, which the returned GemmQuants accumulate into.
  std::vector<GemmQuant> BeginStep(const LayerPlan& plan);
  // After the step's passes: pushes amaxes into the histories and recomputes the scales
  // (delayed), and records the step's telemetry (AmaxRecord.step = step + 1). Called for skipped
  // steps too, so that scales can recover from an overflow.
  void EndStep(int64_t step);
  // The same quantization for an evaluation pass, recording nothing.
  std::vector<GemmQuant> EvalQuant(const LayerPlan& plan) const;

  // Every FP8 tensor of the last step: layer order, then input, weight, grad_output.
  fp8d::v1::AmaxRecord Telemetry() const;

  // Under delayed, "fp8.<layer>.<role>.scale" [1] and "fp8.<layer>.<role>.amax_history"
  // [amax_history_len] for every GEMM layer and role (whether or not the layer runs FP8, so the
  // names do not depend on the step); nothing under other recipes.
  void Save(TensorMap* out) const;
  // Reads the tensors Save writes; the caller has checked their presence and shapes.
  void Load(const TensorMap& state);

  static constexpr int kRoles = 3;  // input, weight, grad_output

 private:
  struct TensorScaling {
    AmaxHistory history{0, AmaxAlgo::kMax};
    float scale = 1.f;
  };
  Fp8Format RoleFormat(int role) const;
  ref::Fp8OperandQuant OperandQuant(int layer, int role) const;
  // Stats of layer i are merged into (*stats)[i] when stats is non-null.
  std::vector<GemmQuant> Quant(const LayerPlan& plan,
                               std::vector<ref::Fp8LinearStats>* stats) const;
  void ResetScaling();
  std::string TensorName(int layer, int role) const;

  ModelConfig model_;
  RecipeConfig recipe_;
  std::vector<std::string> layers_;
  std::vector<std::array<TensorScaling, kRoles>> scaling_;  // delayed only, one per layer
  // The step in progress: which layers run FP8 and their operand stats.
  std::vector<bool> step_fp8_;
  std::vector<ref::Fp8LinearStats> step_stats_;
  fp8d::v1::AmaxRecord telemetry_;  // of the last finished step
};

}  // namespace fp8d
