// CudaEngine: the GPU implementation of fp8d::Engine (core/engine.h), computing the same function
// as the CPU reference in BF16 with FP32 accumulation, master weights and optimizer state.
//
// Everything lives on the GPU in one slab sized at creation (kernels/memory_plan.h): FP32 master
// weights and their BF16 copy, FP32 gradients, AdamW moments, the activations saved for backward
// and backward scratch. A step allocates nothing; the host uploads the token batches through a
// pinned staging buffer and reads back only the per-token losses and the gradient norm, which it
// needs to report the step and to decide whether to skip a non-finite update.
//
// Parameters, gradients and moments are laid out in ParamSpecs order (core/model_weights.h) so
// the whole model is one contiguous vector: the gradient norm is one reduction and state
// transfer is one copy per tensor. Tensor names in SaveState/LoadState are the CPU engine's, so
// checkpoints move between the engines.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "core/engine.h"
#include "core/model_config.h"
#include "core/recipe_config.h"
#include "kernels/attention_cudnn.h"
#include "kernels/attention_reference.cuh"
#include "kernels/gemm.h"
#include "kernels/memory_plan.h"

namespace fp8d::kernels {

// Which attention implementation the engine runs.
enum class AttentionBackend { kCudnn, kReference };

struct CudaEngineOptions {
  // kCudnn runs the attention forward through cuDNN and falls back to the reference kernel when
  // cuDNN cannot build a deterministic plan for the shape; attention_backend() and
  // attention_note() say what runs and why.
  AttentionBackend attention = AttentionBackend::kCudnn;
  // With kCudnn, the backward runs through cuDNN too (checked against the CPU reference by
  // tests/gpu/attention_test.cu); false keeps it on the reference kernel.
  bool cudnn_attention_backward = true;
};

class CudaEngine : public Engine {
 public:
  // Starts from InitWeights(model, seed). FAILED_PRECONDITION without a GPU or for an FP8 recipe
  // (not yet available on the GPU; mxfp8 needs sm_100 or newer); RESOURCE_EXHAUSTED when the
  // memory plan for max_batch x max_seq_len does not fit the free GPU memory.
  static absl::StatusOr<std::unique_ptr<CudaEngine>> Create(const ModelConfig& model,
                                                            const RecipeConfig& recipe,
                                                            uint64_t seed, int max_batch,
                                                            int max_seq_len,
                                                            CudaEngineOptions options = {});
  // GPU description without creating an engine; FAILED_PRECONDITION when there is none.
  static absl::StatusOr<DeviceInfo> Probe();

  ~CudaEngine() override;

  const DeviceInfo& device() const override { return device_; }
  const ModelConfig& model() const override { return model_; }
  absl::StatusOr<StepResult> TrainStep(absl::Span<const TokenBatch> micro_batches,
                                       const OptimizerStepArgs& args) override;
  absl::StatusOr<float> EvalLoss(const TokenBatch& batch) override;
  absl::Status SetRecipe(const RecipeConfig& recipe, fp8d::v1::AmaxHandling handling) override;
  const RecipeConfig& recipe() const override { return recipe_; }
  LayerPlan PlanLayers(int64_t step) const override;
  fp8d::v1::AmaxRecord AmaxTelemetry() const override { return {}; }
  absl::StatusOr<TensorMap> SaveState() const override;
  absl::Status LoadState(const TensorMap& state) override;
  // The slab: parameters, gradients, optimizer state, activations and workspaces.
  int64_t MemoryBytes() const override { return static_cast<int64_t>(plan_.slab_bytes()); }

  const MemoryPlan& memory_plan() const { return plan_; }
  AttentionBackend attention_backend() const { return attention_backend_; }
  // Empty, or why cuDNN attention is not in use.
  const std::string& attention_note() const { return attention_note_; }

 private:
  struct ParamSlot {
    std::string name;
    std::vector<int64_t> shape;
    int64_t offset = 0;  // elements from the start of the parameter vector
    int64_t numel = 0;
    bool is_norm = false;
  };

  CudaEngine(const ModelConfig& model, const RecipeConfig& recipe, int max_batch,
             int max_seq_len, CudaEngineOptions options);
  absl::Status Init(uint64_t seed);
  absl::Status ValidateBatch(const TokenBatch& batch, const char* what) const;
  absl::Status UploadTokens(const TokenBatch& batch);
  // Forward through the final norm for the batch in act.tokens.
  absl::Status Forward(const BatchShape& shape);
  // LM head + cross-entropy by row chunks; with `backward`, also dlogits, the gradient of the
  // final norm's output (into scratch.dln) and the LM head's weight gradient. Per-token losses
  // land in act.loss.
  absl::Status LmHeadAndLoss(const BatchShape& shape, float dloss, bool backward);
  absl::Status Backward(const BatchShape& shape);
  absl::Status Attention(int layer, const BatchShape& shape, bool backward);
  AttentionDims AttentionShape(const BatchShape& shape) const;
  absl::Status Linear(const void* x, int64_t x_rows, const std::string& weight, void* y,
                      int64_t out_features, int64_t in_features);
  absl::Status LinearBackward(const void* dy, const void* x, int64_t rows,
                              const std::string& weight, void* dx, int64_t out_features,
                              int64_t in_features);
  // Mean of the per-token losses of the last LmHeadAndLoss (reduced on the device in a fixed
  // order), read back to the host.
  absl::StatusOr<float> ReadMeanLoss(int64_t tokens);
  // Single-float slots in scratch.scalars.
  static constexpr int kMeanLossSlot = 0, kGradNormSlot = 1, kClipSlot = 2;
  float* ScalarSlot(int slot) const;

  const ParamSlot& Slot(const std::string& name) const;
  float* ParamF32(const std::string& name) const;
  void* ParamBf16(const std::string& name) const;
  float* Grad(const std::string& name) const;
  template <typename T>
  T* Buf(const std::string& region) const {
    return slab_.Get<T>(plan_, region);
  }

  ModelConfig model_;
  RecipeConfig recipe_;
  int max_batch_;
  int max_seq_len_;
  CudaEngineOptions options_;
  DeviceInfo device_;

  std::vector<ParamSlot> slots_;
  std::map<std::string, size_t> slot_index_;
  int64_t param_count_ = 0;
  int64_t adam_step_ = 0;          // optimizer updates applied so far ("optim.step")
  size_t norm_ws_bytes_ = 0;       // "ws.norm": RMSNorm and embedding backward scratch
  size_t attention_ws_bytes_ = 0;  // "ws.attention": attention backward scratch

  MemoryPlan plan_;
  DeviceSlab slab_;
  cudaStream_t stream_ = nullptr;
  std::unique_ptr<GemmRunner> gemm_;
  std::unique_ptr<CudnnAttention> cudnn_attention_;  // null when the reference kernel runs
  AttentionBackend attention_backend_ = AttentionBackend::kReference;
  std::string attention_note_;
  bool reported_attention_fallback_ = false;
  int32_t* pinned_tokens_ = nullptr;  // [2, max tokens]: inputs then targets
  float* pinned_scalars_ = nullptr;   // [16]
};

}  // namespace fp8d::kernels
