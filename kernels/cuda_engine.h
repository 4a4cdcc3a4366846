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
#include "kernels/fp8_cast.cuh"
#include "kernels/fp8_linear.h"
#include "kernels/gemm.h"
#include "kernels/gemm_fp8.h"
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
  // The cuDNN backward's dS workspace bound (CudnnAttention::Create) and, for measuring what
  // determinism costs only, the non-reproducible form of its dQ product.
  size_t attention_ds_workspace_limit_bytes = CudnnAttention::kDefaultDsWorkspaceLimitBytes;
  CudnnAttention::BackwardDq attention_backward_dq = CudnnAttention::BackwardDq::kOrdered;
  // Under delayed scaling, RMSNorm and SwiGLU write their FP8-layer outputs (and SwiGLU's
  // backward the MLP-up projection's dY) straight in FP8 (kernels/fp8_fused.cuh) instead of a
  // BF16 tensor cast afterwards. Same bytes either way; false runs the unfused kernels.
  bool fuse_fp8_casts = true;
  // Rows per LM-head chunk: 0 takes the memory plan's (LmHeadChunkRows: logits under 512 MiB);
  // otherwise a positive multiple of 128, used where it is smaller. Tests use it to run the
  // chunked LM head at small sizes.
  int64_t lm_head_chunk_rows = 0;
};

class CudaEngine : public Engine {
 public:
  // Starts from InitWeights(model, seed). FAILED_PRECONDITION without a GPU and for mxfp8 (needs
  // sm_100 or newer); RESOURCE_EXHAUSTED when the memory plan for max_batch x max_seq_len does
  // not fit the free GPU memory.
  //
  // FP8 (delayed, current, rowwise, blockwise with 1x128 or 128x128 weight blocks): every GEMM
  // layer the plan marks FP8 runs through its own Fp8Linear (kernels/fp8_linear.h); the others
  // run BF16.
  // On top of PlanFp8Layers the GPU plan keeps a layer BF16 when
  //  - n, k or the planned tokens per micro-batch (max_batch x max_seq_len) is not a multiple
  //    of 16 (Fp8Linear's requirement: each is one GEMM's contraction dimension);
  //  - it is the LM head, its micro-batch runs in more than one row chunk and the recipe is
  //    current or rowwise: their scales span all tokens of a tensor (current: the amax of the
  //    whole X and dY; rowwise: each column of X^T and dY^T), which chunks cannot give without
  //    another pass. Delayed scales are known before the step, and 1x128 blocks along the tokens
  //    do not cross chunks (whose rows are a multiple of 128), so those run every chunk FP8.
  // Under skip_attention_qk, attn.qkv runs its Q and K output rows in BF16 and its V rows FP8
  // (as the CPU engine); see kernels/cuda_engine_linear.cc.
  // With FP8 layers planned, every training micro-batch must hold a multiple of 16 tokens
  // (INVALID_ARGUMENT otherwise); an evaluation batch that does not runs all layers BF16.
  // The FP8 state (per-layer stats, delayed scales and amax histories, the layers' workspaces)
  // is one device allocation made at creation and at SetRecipe; a step allocates nothing.
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
  // Built from the pinned copy of the last step's FP8 statistics, which the step queued after
  // its update; waits only for that copy.
  fp8d::v1::AmaxRecord AmaxTelemetry() const override;
  absl::StatusOr<TensorMap> SaveState() const override;
  absl::Status LoadState(const TensorMap& state) override;
  // The slab: parameters, gradients, optimizer state, activations and workspaces.
  // (Plus the FP8 state allocation under an FP8 recipe.)
  int64_t MemoryBytes() const override {
    return static_cast<int64_t>(plan_.slab_bytes() + fp8_bytes_);
  }

  const MemoryPlan& memory_plan() const { return plan_; }
  // The runner of the FP8 GEMMs (null until an FP8 recipe is set up); fp8d-bench times it.
  Fp8GemmRunner* fp8_gemm_runner() const { return fp8_gemm_.get(); }
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
  // y = x W^T, plus `residual` (same shape as y) when given.
  absl::Status Linear(const void* x, int64_t x_rows, const std::string& weight, void* y,
                      int64_t out_features, int64_t in_features, const void* residual = nullptr);
  absl::Status LinearBackward(const void* dy, const void* x, int64_t rows,
                              const std::string& weight, void* dx, int64_t out_features,
                              int64_t in_features);
  // Mean of the per-token losses of the last LmHeadAndLoss (reduced on the device in a fixed
  // order), read back to the host.
  absl::StatusOr<float> ReadMeanLoss(int64_t tokens);
  // Single-float slots in scratch.scalars.
  static constexpr int kMeanLossSlot = 0, kGradNormSlot = 1, kClipSlot = 2;
  float* ScalarSlot(int slot) const;

  // FP8: (re)builds the FP8 state for recipe_ (one allocation, default scaling state).
  absl::Status SetUpFp8();
  void ReleaseFp8();
  // Which layers may run FP8 at `step` (PlanLayers plus nothing: the GPU rules are in it).
  // Prepares the pass: layers with this pass's m, weights cast when `cast_weights` or rebuilt.
  absl::Status BeginFp8Pass(const std::vector<bool>& fp8, int64_t m, bool cast_weights);
  // Host copies of the delayed scales [layers*3] and histories [layers*3, len].
  absl::Status ReadFp8Scaling(std::vector<float>* scales, std::vector<float>* histories) const;
  absl::Status WriteFp8Scaling(const std::vector<float>& scales,
                               const std::vector<float>& histories);
  int Fp8LayerOf(const std::string& weight) const;
  // The part of GEMM layer `layer` its Fp8Linear runs: W's rows from Fp8FirstRow (the V rows of
  // attn.qkv under skip_attention_qk, else all), and the rows per call at `tokens` per pass
  // (the LM head's chunk, else `tokens`). kernels/cuda_engine_linear.cc.
  bool Fp8LayerIsVOnly(size_t layer) const;
  int64_t Fp8FirstRow(size_t layer) const;
  GemmShape Fp8LayerShape(size_t layer, int64_t tokens) const;
  // The layer's Fp8Linear when a producer may write its operand of [rows, cols] in FP8 itself
  // in this pass (options_.fuse_fp8_casts, delayed scaling, 64-aligned shape), else null.
  Fp8Linear* FusedFp8Layer(const std::string& weight, int64_t rows, int64_t cols) const;
  Fp8Format Fp8RoleFormat(int role) const;

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
  int64_t lm_head_chunk_ = 0;          // rows per LM-head chunk (see lm_head_chunk_rows)
  int32_t* pinned_tokens_ = nullptr;  // [2, max tokens]: inputs then targets
  float* pinned_scalars_ = nullptr;   // [16]

  // FP8 state. Tensors are indexed layer * 3 + role (kFp8Input, kFp8Weight, kFp8GradOutput),
  // layers as GemmLayerNames.
  std::vector<std::string> gemm_layers_;
  std::map<std::string, int> weight_layer_;  // weight name -> layer index
  std::unique_ptr<Fp8GemmRunner> fp8_gemm_;
  Fp8LinearOptions fp8_options_;
  void* fp8_buf_ = nullptr;
  size_t fp8_bytes_ = 0;
  Fp8CastStats* fp8_stats_ = nullptr;       // written by each Fp8Linear call
  Fp8CastStats* fp8_step_stats_ = nullptr;  // merged over the step's micro-batches
  float* fp8_amax_ = nullptr;               // the step's amaxes (delayed update input)
  float* fp8_scales_ = nullptr;             // delayed scales
  float* fp8_histories_ = nullptr;          // delayed amax histories
  float* fp8_max_ = nullptr;                // per tensor fp8 max
  uint8_t* fp8_active_ = nullptr;           // per tensor: its layer runs FP8 this step
  std::vector<void*> fp8_ws_;               // per layer, null when never FP8
  std::vector<size_t> fp8_ws_bytes_;
  void* fp8_scratch_ = nullptr;  // shared by the layers (Fp8Linear's per-call scratch)
  size_t fp8_scratch_bytes_ = 0;
  std::vector<std::unique_ptr<Fp8Linear>> fp8_linear_;  // per layer, built for fp8_m_
  int64_t fp8_m_ = 0;
  std::vector<bool> pass_fp8_;  // layers running FP8 in the pass in progress
  bool pass_for_backward_ = false;
  // Telemetry: pinned copies queued after each step, and what the host needs to read them.
  Fp8CastStats* pinned_fp8_stats_ = nullptr;
  float* pinned_fp8_scales_used_ = nullptr;
  float* pinned_fp8_histories_ = nullptr;
  cudaEvent_t telemetry_event_ = nullptr;
  struct TelemetryMeta {
    bool valid = false;
    int64_t step = 0;
    RecipeConfig recipe;
    std::vector<bool> fp8;
    int64_t tokens = 0;        // summed over the micro-batches
    int64_t micro_batches = 0;
  };
  TelemetryMeta telemetry_meta_;
  fp8d::v1::AmaxRecord cached_record_;  // the last step's record once its buffers are gone
  int64_t next_step_ = 0;               // last TrainStep's args.step + 1 (EvalLoss's plan)
};

}  // namespace fp8d::kernels
