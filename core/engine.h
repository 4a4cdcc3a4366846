// The engine interface: one optimizer step, eval, recipe changes, telemetry and state
// transfer. CpuEngine (core/cpu_engine.h) is the FP32 reference with FP8 emulated bit-exactly;
// CudaEngine (kernels/) computes the same function on the GPU. The trainer drives either.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "core/model_config.h"
#include "core/recipe_config.h"
#include "core/tensor_map.h"
#include "fp8d/v1/telemetry.pb.h"

namespace fp8d {

// One micro-batch: `inputs[b*seq_len + t]` predicts `targets[b*seq_len + t]`.
struct TokenBatch {
  int batch = 0;
  int seq_len = 0;
  std::vector<int32_t> inputs;
  std::vector<int32_t> targets;
};

struct OptimizerStepArgs {
  int64_t step = 0;        // index of the step being run, 0-based (decides BF16 warm-up)
  float lr = 0.f;
  float beta1 = 0.9f;
  float beta2 = 0.95f;
  float eps = 1e-8f;
  float weight_decay = 0.f;
  float grad_clip = 0.f;   // 0 disables clipping
};

struct StepResult {
  float loss = 0.f;        // mean over all micro-batch tokens
  float grad_norm = 0.f;   // global L2 norm before clipping
  bool skipped = false;    // non-finite loss or gradient: parameters and optimizer untouched
};

struct DeviceInfo {
  std::string engine;              // "cpu" or "cuda"
  std::string name;                // device model
  std::string compute_capability;  // "9.0"; empty on CPU
  int64_t memory_bytes = 0;
  double peak_bf16_tflops = 0.0;   // dense peak used for MFU; 0 when unknown
  std::vector<std::string> supported_recipes;
  std::vector<std::string> unsupported_recipes;  // "mxfp8: needs sm_100 or newer"
};

// Which GEMM layers run FP8 under the active recipe and policy.
struct LayerPlan {
  std::vector<std::string> layers;      // every GEMM layer, in model order
  std::vector<bool> fp8;                // parallel to `layers`
  int fp8_count() const {
    int n = 0;
    for (bool b : fp8) n += b;
    return n;
  }
};

class Engine {
 public:
  virtual ~Engine() = default;

  virtual const DeviceInfo& device() const = 0;
  virtual const ModelConfig& model() const = 0;

  // Forward + backward over every micro-batch (gradients averaged over all of them), global-norm
  // clipping, AdamW. A non-finite loss or gradient skips the update and sets `skipped`.
  virtual absl::StatusOr<StepResult> TrainStep(absl::Span<const TokenBatch> micro_batches,
                                               const OptimizerStepArgs& args) = 0;

  // Mean cross-entropy (nats/token) of one batch with the current weights; no state changes.
  virtual absl::StatusOr<float> EvalLoss(const TokenBatch& batch) = 0;

  // Takes effect for the next TrainStep. `recipe` must already be validated.
  virtual absl::Status SetRecipe(const RecipeConfig& recipe, fp8d::v1::AmaxHandling handling) = 0;
  virtual const RecipeConfig& recipe() const = 0;

  // Layer plan for a step index (BF16 warm-up makes it step dependent).
  virtual LayerPlan PlanLayers(int64_t step) const = 0;

  // Every FP8 tensor's amax, scale, history and saturation/underflow fractions as of the last
  // TrainStep. Empty under bf16.
  virtual fp8d::v1::AmaxRecord AmaxTelemetry() const = 0;

  // Weights ("model.*", "lm_head.weight"), AdamW moments ("optim.m.*", "optim.v.*", "optim.step"),
  // FP8 scaling state ("fp8.<layer>.<role>.scale", "fp8.<layer>.<role>.amax_history").
  virtual absl::StatusOr<TensorMap> SaveState() const = 0;
  virtual absl::Status LoadState(const TensorMap& state) = 0;

  // Peak device memory the engine holds (parameters, gradients, optimizer, activations).
  virtual int64_t MemoryBytes() const = 0;
};

}  // namespace fp8d
