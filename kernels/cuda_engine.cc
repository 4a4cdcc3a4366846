#include "kernels/cuda_engine.h"

#include <cuda_bf16.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <cmath>
#include <limits>
#include <utility>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "core/fp8_format.h"
#include "core/fp8_gemm_threshold.h"
#include "core/fp8_scaling.h"
#include "core/layer_policy.h"
#include "core/model_weights.h"
#include "kernels/adamw.cuh"
#include "kernels/attention_reference.cuh"
#include "kernels/convert.cuh"
#include "kernels/cross_entropy.cuh"
#include "kernels/cuda_check.h"
#include "kernels/delayed_scaling.cuh"
#include "kernels/fp8_fused.cuh"
#include "kernels/fp8_step_stats.cuh"
#include "kernels/embedding.cuh"
#include "kernels/grad_norm.cuh"
#include "kernels/rmsnorm.cuh"
#include "kernels/rope.cuh"
#include "kernels/swiglu.cuh"

namespace fp8d::kernels {
namespace {

using bf16 = __nv_bfloat16;

// Dense BF16 tensor-core peak for MFU, by the vendor's datasheets: the SXM parts of the H100 and
// H200 share one Hopper chip and clock (989.4 TFLOP/s); the PCIe and NVL boards run lower clocks.
// Other GPUs report 0 (unknown), and no MFU is shown for them.
double DenseBf16PeakTflops(const cudaDeviceProp& prop) {
  if (prop.major != 9) return 0.0;
  const std::string name = prop.name;
  if (name.find("H100") == std::string::npos && name.find("H200") == std::string::npos) return 0.0;
  if (name.find("PCIe") != std::string::npos) return 756.0;
  if (name.find("NVL") != std::string::npos) return 835.0;
  return 989.0;
}

std::string LayerPrefix(int l) { return absl::StrCat("model.layers.", l, "."); }
std::string ActPrefix(int l) { return absl::StrCat("act.", l, "."); }

// The CPU engine's checkpoint name of a delayed-scaling tensor: fp8.<layer>.<role>.
std::string Fp8TensorName(const std::string& layer, int role) {
  constexpr const char* kRoleNames[kFp8LinearRoles] = {"input", "weight", "grad_output"};
  return absl::StrCat("fp8.", layer, ".", kRoleNames[role]);
}

absl::StatusOr<cudaDeviceProp> CurrentDevice() {
  int count = 0;
  const cudaError_t err = cudaGetDeviceCount(&count);
  if (err != cudaSuccess || count == 0) {
    return absl::FailedPreconditionError(absl::StrCat(
        "no CUDA GPU is available (", err == cudaSuccess ? "no devices" : cudaGetErrorString(err),
        "); use the cpu engine"));
  }
  int dev = 0;
  CUDA_RETURN_IF_ERROR(cudaGetDevice(&dev));
  cudaDeviceProp prop{};
  CUDA_RETURN_IF_ERROR(cudaGetDeviceProperties(&prop, dev));
  return prop;
}

DeviceInfo DescribeDevice(const cudaDeviceProp& prop) {
  DeviceInfo info;
  info.engine = "cuda";
  info.name = prop.name;
  info.compute_capability = absl::StrCat(prop.major, ".", prop.minor);
  info.memory_bytes = static_cast<int64_t>(prop.totalGlobalMem);
  info.peak_bf16_tflops = DenseBf16PeakTflops(prop);
  info.supported_recipes = {"bf16", "delayed", "current", "rowwise", "blockwise"};
  // Entries are "<recipe name>: reason" (the daemon refuses a job by that name).
  info.unsupported_recipes = {};
  if (prop.major >= 10) {
    info.unsupported_recipes.push_back("mxfp8: not implemented on the GPU engine");
  } else {
    info.unsupported_recipes.push_back("mxfp8: needs sm_100 or newer");
  }
  return info;
}

absl::Status CheckRecipe(const RecipeConfig& recipe, const cudaDeviceProp& prop) {
  if (recipe.kind == RecipeKind::kMxfp8 && prop.major < 10) {
    return absl::FailedPreconditionError(absl::StrCat(
        "recipe mxfp8 needs sm_100 or newer; this GPU (", prop.name, ") is sm_", prop.major,
        prop.minor));
  }
  if (recipe.kind == RecipeKind::kMxfp8) {
    return absl::FailedPreconditionError(
        "recipe mxfp8 is not implemented on the GPU engine; use the cpu engine");
  }
  if (recipe.is_fp8()) {
    absl::StatusOr<Fp8LinearOptions> options = Fp8LinearOptionsFromRecipe(recipe);
    if (!options.ok()) {
      return absl::FailedPreconditionError(absl::StrCat(
          "recipe ", std::string(RecipeKindName(recipe.kind)),
          " is not available on the GPU: ", options.status().message()));
    }
  }
  return absl::OkStatus();
}

}  // namespace

float* CudaEngine::ScalarSlot(int slot) const {
  // scratch.scalars: the gradient-norm partials (doubles) first, then single floats.
  return reinterpret_cast<float*>(Buf<char>("scratch.scalars") +
                                  kGradNormBlocks * sizeof(double)) +
         slot;
}

absl::StatusOr<DeviceInfo> CudaEngine::Probe() {
  absl::StatusOr<cudaDeviceProp> prop = CurrentDevice();
  if (!prop.ok()) return prop.status();
  return DescribeDevice(*prop);
}

absl::StatusOr<std::unique_ptr<CudaEngine>> CudaEngine::Create(const ModelConfig& model,
                                                               const RecipeConfig& recipe,
                                                               uint64_t seed, int max_batch,
                                                               int max_seq_len,
                                                               CudaEngineOptions options) {
  if (max_batch < 1) {
    return absl::InvalidArgumentError(absl::StrCat("max_batch = ", max_batch, " must be >= 1"));
  }
  if (max_seq_len < 1 || max_seq_len > model.max_seq_len) {
    return absl::InvalidArgumentError(absl::StrCat("max_seq_len = ", max_seq_len,
                                                   " must be in 1..model.max_seq_len (",
                                                   model.max_seq_len, ")"));
  }
  if (options.lm_head_chunk_rows < 0 || options.lm_head_chunk_rows % 128 != 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        "lm_head_chunk_rows = ", options.lm_head_chunk_rows,
        " must be 0 (the memory plan's) or a positive multiple of 128"));
  }
  absl::StatusOr<cudaDeviceProp> prop = CurrentDevice();
  if (!prop.ok()) return prop.status();
  if (absl::Status s = CheckRecipe(recipe, *prop); !s.ok()) return s;
  std::unique_ptr<CudaEngine> engine(
      new CudaEngine(model, recipe, max_batch, max_seq_len, options));
  engine->device_ = DescribeDevice(*prop);
  if (absl::Status s = engine->Init(seed); !s.ok()) return s;
  return engine;
}

CudaEngine::CudaEngine(const ModelConfig& model, const RecipeConfig& recipe, int max_batch,
                       int max_seq_len, CudaEngineOptions options)
    : model_(model),
      recipe_(recipe),
      max_batch_(max_batch),
      max_seq_len_(max_seq_len),
      options_(options) {
  lm_head_chunk_ = LmHeadChunkRows(model_, BatchShape{max_batch_, max_seq_len_});
  if (options_.lm_head_chunk_rows > 0) {
    lm_head_chunk_ = std::min(lm_head_chunk_, options_.lm_head_chunk_rows);
  }
}

CudaEngine::~CudaEngine() {
  if (stream_ != nullptr) cudaStreamSynchronize(stream_);
  ReleaseFp8();
  fp8_gemm_.reset();
  if (telemetry_event_ != nullptr) cudaEventDestroy(telemetry_event_);
  gemm_.reset();
  cudnn_attention_.reset();
  if (pinned_tokens_ != nullptr) cudaFreeHost(pinned_tokens_);
  if (pinned_scalars_ != nullptr) cudaFreeHost(pinned_scalars_);
  if (stream_ != nullptr) cudaStreamDestroy(stream_);
}

absl::Status CudaEngine::Init(uint64_t seed) {
  for (const ParamSpec& spec : ParamSpecs(model_)) {
    ParamSlot slot;
    slot.name = spec.name;
    slot.shape = spec.shape;
    slot.numel = 1;
    for (int64_t d : spec.shape) slot.numel *= d;
    slot.offset = param_count_;
    slot.is_norm = spec.is_norm;
    param_count_ += slot.numel;
    slot_index_[slot.name] = slots_.size();
    slots_.push_back(std::move(slot));
  }

  const BatchShape max_shape{max_batch_, max_seq_len_};
  const int64_t max_tokens = max_shape.tokens();
  const size_t norm_ws =
      std::max(RmsNormBackwardWorkspaceBytes(max_tokens, model_.d_model),
               EmbeddingBackwardWorkspaceBytes(static_cast<int>(max_tokens), model_.vocab_size));
  norm_ws_bytes_ = std::max<size_t>(norm_ws, 256);
  CUDA_RETURN_IF_ERROR(cudaStreamCreateWithFlags(&stream_, cudaStreamNonBlocking));
  attention_ws_bytes_ =
      std::max<size_t>(ReferenceAttentionBackwardWorkspaceBytes(AttentionShape(max_shape)), 256);
  if (options_.attention == AttentionBackend::kCudnn) {
    // Graphs for the largest shape are built before the memory plan so that their workspace is
    // part of it; a graph cuDNN cannot run leaves the reference kernel in place.
    absl::StatusOr<std::unique_ptr<CudnnAttention>> cudnn = CudnnAttention::Create(
        stream_, options_.attention_ds_workspace_limit_bytes, options_.attention_backward_dq);
    absl::StatusOr<size_t> ws = cudnn.ok() ? (*cudnn)->Prepare(AttentionShape(max_shape))
                                           : absl::StatusOr<size_t>(cudnn.status());
    if (ws.ok()) {
      cudnn_attention_ = std::move(*cudnn);
      attention_backend_ = AttentionBackend::kCudnn;
      attention_ws_bytes_ = std::max(attention_ws_bytes_, *ws);
      if (!options_.cudnn_attention_backward) {
        attention_note_ = "attention backward runs on the reference kernel "
                          "(CudaEngineOptions::cudnn_attention_backward is off)";
      } else if (absl::Status bwd = cudnn_attention_->BackwardStatus(AttentionShape(max_shape));
                 !bwd.ok()) {
        attention_note_ = std::string(bwd.message());
        std::fprintf(stderr,
                     "fp8d: cuDNN attention backward unavailable, using the reference kernel "
                     "for it: %s\n",
                     attention_note_.c_str());
      }
    } else {
      attention_note_ = std::string(ws.status().message());
      std::fprintf(stderr, "fp8d: cuDNN attention unavailable, using the reference kernel: %s\n",
                   attention_note_.c_str());
    }
  }
  plan_ = PlanTrainingMemory(model_, max_shape, attention_ws_bytes_, norm_ws_bytes_);
  absl::StatusOr<DeviceSlab> slab = DeviceSlab::Allocate(plan_);
  if (!slab.ok()) return slab.status();
  slab_ = std::move(*slab);

  absl::StatusOr<std::unique_ptr<GemmRunner>> gemm =
      GemmRunner::Create(Buf<void>("ws.gemm"), kGemmWorkspaceBytes);
  if (!gemm.ok()) return gemm.status();
  gemm_ = std::move(*gemm);
  CUDA_RETURN_IF_ERROR(
      cudaMallocHost(reinterpret_cast<void**>(&pinned_tokens_), 2 * max_tokens * sizeof(int32_t)));
  CUDA_RETURN_IF_ERROR(cudaMallocHost(reinterpret_cast<void**>(&pinned_scalars_), 64));

  // Fresh optimizer state, then the seeded weights every engine starts from.
  CUDA_RETURN_IF_ERROR(cudaMemsetAsync(Buf<void>("adam.m"), 0, param_count_ * 4, stream_));
  CUDA_RETURN_IF_ERROR(cudaMemsetAsync(Buf<void>("adam.v"), 0, param_count_ * 4, stream_));
  CUDA_RETURN_IF_ERROR(cudaMemsetAsync(Buf<void>("grad.f32"), 0, param_count_ * 4, stream_));
  gemm_layers_ = GemmLayerNames(model_);
  for (size_t i = 0; i < gemm_layers_.size(); ++i) {
    weight_layer_[GemmLayerWeight(model_, gemm_layers_[i])] = static_cast<int>(i);
  }
  CUDA_RETURN_IF_ERROR(cudaEventCreateWithFlags(&telemetry_event_, cudaEventDisableTiming));
  if (absl::Status s = SetUpFp8(); !s.ok()) return s;
  TensorMap init = InitWeights(model_, seed);
  return LoadState(init);
}

const CudaEngine::ParamSlot& CudaEngine::Slot(const std::string& name) const {
  auto it = slot_index_.find(name);
  if (it == slot_index_.end()) {
    std::fprintf(stderr, "CudaEngine: no parameter named %s\n", name.c_str());
    std::abort();
  }
  return slots_[it->second];
}
float* CudaEngine::ParamF32(const std::string& name) const {
  return Buf<float>("param.f32") + Slot(name).offset;
}
void* CudaEngine::ParamBf16(const std::string& name) const {
  return Buf<bf16>("param.bf16") + Slot(name).offset;
}
float* CudaEngine::Grad(const std::string& name) const {
  return Buf<float>("grad.f32") + Slot(name).offset;
}

// ---------------------------------------------------------------------------------------------
// State transfer

absl::StatusOr<TensorMap> CudaEngine::SaveState() const {
  TensorMap out;
  CUDA_RETURN_IF_ERROR(cudaStreamSynchronize(stream_));
  auto fetch = [&](const float* base, const ParamSlot& slot, const std::string& name)
      -> absl::Status {
    HostTensor t;
    t.shape = slot.shape;
    t.data.resize(slot.numel);
    CUDA_RETURN_IF_ERROR(cudaMemcpyAsync(t.data.data(), base + slot.offset,
                                         slot.numel * sizeof(float), cudaMemcpyDeviceToHost,
                                         stream_));
    out.emplace(name, std::move(t));
    return absl::OkStatus();
  };
  for (const ParamSlot& slot : slots_) {
    if (absl::Status s = fetch(Buf<float>("param.f32"), slot, slot.name); !s.ok()) return s;
    if (absl::Status s = fetch(Buf<float>("adam.m"), slot, "optim.m." + slot.name); !s.ok())
      return s;
    if (absl::Status s = fetch(Buf<float>("adam.v"), slot, "optim.v." + slot.name); !s.ok())
      return s;
  }
  HostTensor step;
  step.shape = {1};
  step.data = {static_cast<float>(adam_step_)};
  out.emplace("optim.step", std::move(step));
  if (recipe_.kind == RecipeKind::kDelayed) {
    // The CPU engine's names and shapes, for every GEMM layer and role.
    std::vector<float> scales, histories;
    if (absl::Status s = ReadFp8Scaling(&scales, &histories); !s.ok()) return s;
    const int len = recipe_.amax_history_len;
    for (size_t i = 0; i < gemm_layers_.size(); ++i) {
      for (int r = 0; r < kFp8LinearRoles; ++r) {
        const size_t t = i * kFp8LinearRoles + r;
        const std::string base = Fp8TensorName(gemm_layers_[i], r);
        out[base + ".scale"] = HostTensor{{1}, {scales[t]}};
        out[base + ".amax_history"] = HostTensor{
            {len}, std::vector<float>(histories.begin() + t * len,
                                      histories.begin() + (t + 1) * len)};
      }
    }
  }
  CUDA_RETURN_IF_ERROR(cudaStreamSynchronize(stream_));
  return out;
}

absl::Status CudaEngine::LoadState(const TensorMap& state) {
  // Validate everything before touching the device, so a bad map leaves the engine unchanged.
  for (const ParamSlot& slot : slots_) {
    auto it = state.find(slot.name);
    if (it == state.end()) {
      return absl::InvalidArgumentError(absl::StrCat("state is missing tensor ", slot.name));
    }
    if (it->second.shape != slot.shape || static_cast<int64_t>(it->second.data.size()) != slot.numel) {
      return absl::InvalidArgumentError(absl::StrCat("state tensor ", slot.name,
                                                     " has the wrong shape for this model"));
    }
    for (const char* kind : {"optim.m.", "optim.v."}) {
      auto opt = state.find(kind + slot.name);
      if (opt != state.end() && static_cast<int64_t>(opt->second.data.size()) != slot.numel) {
        return absl::InvalidArgumentError(
            absl::StrCat("state tensor ", kind, slot.name, " has the wrong size"));
      }
    }
  }
  // Delayed scaling state: all of it or none (then the current state stays).
  const bool delayed = recipe_.kind == RecipeKind::kDelayed;
  bool has_fp8 = false;
  if (delayed) {
    int found = 0, expected = 0;
    for (const std::string& layer : gemm_layers_) {
      for (int r = 0; r < kFp8LinearRoles; ++r) {
        const std::string base = Fp8TensorName(layer, r);
        for (const auto& [suffix, size] :
             {std::pair<std::string, size_t>{".scale", 1},
              std::pair<std::string, size_t>{".amax_history",
                                             static_cast<size_t>(recipe_.amax_history_len)}}) {
          ++expected;
          auto it = state.find(base + suffix);
          if (it == state.end()) continue;
          ++found;
          if (it->second.data.size() != size) {
            return absl::InvalidArgumentError(absl::StrCat(
                "state tensor ", base, suffix, " holds ", it->second.data.size(),
                " values; the recipe wants ", size));
          }
        }
      }
    }
    if (found != 0 && found != expected) {
      return absl::InvalidArgumentError(absl::StrCat(
          "state holds ", found, " of the ", expected,
          " fp8.* delayed-scaling tensors; expected all or none"));
    }
    has_fp8 = found == expected && expected > 0;
  }
  CUDA_RETURN_IF_ERROR(cudaStreamSynchronize(stream_));
  if (has_fp8) {
    const int len = recipe_.amax_history_len;
    std::vector<float> scales(gemm_layers_.size() * kFp8LinearRoles);
    std::vector<float> histories(scales.size() * len);
    for (size_t i = 0; i < gemm_layers_.size(); ++i) {
      for (int r = 0; r < kFp8LinearRoles; ++r) {
        const size_t t = i * kFp8LinearRoles + r;
        const std::string base = Fp8TensorName(gemm_layers_[i], r);
        scales[t] = state.at(base + ".scale").data[0];
        const std::vector<float>& h = state.at(base + ".amax_history").data;
        std::copy(h.begin(), h.end(), histories.begin() + t * len);
      }
    }
    if (absl::Status s = WriteFp8Scaling(scales, histories); !s.ok()) return s;
  }
  const bool has_optim = state.count("optim.step") > 0;
  for (const ParamSlot& slot : slots_) {
    // Copies go through stream_ so that the BF16 conversion below is ordered after them.
    CUDA_RETURN_IF_ERROR(cudaMemcpyAsync(Buf<float>("param.f32") + slot.offset,
                                         state.at(slot.name).data.data(),
                                         slot.numel * sizeof(float), cudaMemcpyHostToDevice,
                                         stream_));
    for (const auto& [kind, region] :
         {std::pair{"optim.m.", "adam.m"}, std::pair{"optim.v.", "adam.v"}}) {
      float* dst = Buf<float>(region) + slot.offset;
      auto opt = state.find(kind + slot.name);
      if (opt != state.end()) {
        CUDA_RETURN_IF_ERROR(cudaMemcpyAsync(dst, opt->second.data.data(),
                                             slot.numel * sizeof(float), cudaMemcpyHostToDevice,
                                             stream_));
      } else if (!has_optim) {
        CUDA_RETURN_IF_ERROR(cudaMemsetAsync(dst, 0, slot.numel * sizeof(float), stream_));
      }
    }
  }
  if (has_optim) {
    const HostTensor& step = state.at("optim.step");
    adam_step_ = step.data.empty() ? 0 : static_cast<int64_t>(std::llround(step.data[0]));
  } else {
    adam_step_ = 0;
  }
  FloatToBf16(stream_, Buf<bf16>("param.bf16"), Buf<float>("param.f32"), param_count_);
  CUDA_RETURN_IF_ERROR(cudaStreamSynchronize(stream_));
  return absl::OkStatus();
}

// ---------------------------------------------------------------------------------------------
// Recipe

absl::Status CudaEngine::SetRecipe(const RecipeConfig& recipe,
                                   fp8d::v1::AmaxHandling handling) {
  absl::StatusOr<cudaDeviceProp> prop = CurrentDevice();
  if (!prop.ok()) return prop.status();
  if (absl::Status s = CheckRecipe(recipe, *prop); !s.ok()) return s;
  // As the CPU engine: delayed -> delayed keeps the histories (resized to the new window) and
  // recomputes each scale from them under the new recipe, unless AMAX_RESET; anything else
  // starts from zero histories and scales of 1.
  const bool keep = recipe_.kind == RecipeKind::kDelayed &&
                    recipe.kind == RecipeKind::kDelayed && handling != fp8d::v1::AMAX_RESET;
  std::vector<float> scales, histories;
  if (keep) {
    if (absl::Status s = ReadFp8Scaling(&scales, &histories); !s.ok()) return s;
  }
  CUDA_RETURN_IF_ERROR(cudaStreamSynchronize(stream_));
  // The last step's record outlives the buffers it is read from.
  cached_record_ = AmaxTelemetry();
  telemetry_meta_.valid = false;
  const int old_len = recipe_.amax_history_len;
  const RecipeConfig old = recipe_;
  recipe_ = recipe;
  if (absl::Status s = SetUpFp8(); !s.ok()) {
    recipe_ = old;
    if (absl::Status back = SetUpFp8(); back.ok() && keep) {
      (void)WriteFp8Scaling(scales, histories);
    }
    return s;
  }
  if (keep) {
    const int len = recipe_.amax_history_len;
    std::vector<float> new_histories(scales.size() * len);
    for (size_t t = 0; t < scales.size(); ++t) {
      AmaxHistory h(len, recipe_.amax_algo);
      h.set_window(std::vector<float>(histories.begin() + t * old_len,
                                      histories.begin() + (t + 1) * old_len));
      std::copy(h.window().begin(), h.window().end(), new_histories.begin() + t * len);
      scales[t] = ComputeScale(h.Reduced(), Fp8Max(Fp8RoleFormat(t % kFp8LinearRoles)),
                               recipe_.margin, scales[t]);
    }
    if (absl::Status s = WriteFp8Scaling(scales, new_histories); !s.ok()) return s;
  }
  return absl::OkStatus();
}

LayerPlan CudaEngine::PlanLayers(int64_t step) const {
  const int64_t m = int64_t{max_batch_} * max_seq_len_;
  // The same automatic size threshold as the CPU engine, so both plan the same layers.
  LayerPlan plan = PlanFp8Layers(model_, recipe_, step, m, AutoMinGemmVolume(recipe_.kind));
  // The GPU's own rules (see the class comment).
  const bool scales_span_tokens =
      recipe_.kind == RecipeKind::kCurrent || recipe_.kind == RecipeKind::kRowwise;
  for (size_t i = 0; i < plan.layers.size(); ++i) {
    if (!plan.fp8[i]) continue;
    const GemmShape g = Fp8LayerShape(i, m);
    const bool chunked_head = plan.layers[i] == "lm_head" && m > lm_head_chunk_;
    if (g.m % 16 != 0 || g.n % 16 != 0 || g.k % 16 != 0 ||
        (chunked_head && scales_span_tokens)) {
      plan.fp8[i] = false;
    }
  }
  return plan;
}

// ---------------------------------------------------------------------------------------------
// FP8 state

Fp8Format CudaEngine::Fp8RoleFormat(int role) const {
  return role == kFp8GradOutput ? recipe_.grad_format() : recipe_.forward_format();
}

int CudaEngine::Fp8LayerOf(const std::string& weight) const {
  auto it = weight_layer_.find(weight);
  return it == weight_layer_.end() ? -1 : it->second;
}

void CudaEngine::ReleaseFp8() {
  if (stream_ != nullptr) cudaStreamSynchronize(stream_);
  fp8_linear_.clear();
  fp8_scratch_ = nullptr;
  fp8_scratch_bytes_ = 0;
  if (fp8_buf_ != nullptr) cudaFree(fp8_buf_);
  if (pinned_fp8_stats_ != nullptr) cudaFreeHost(pinned_fp8_stats_);
  if (pinned_fp8_scales_used_ != nullptr) cudaFreeHost(pinned_fp8_scales_used_);
  if (pinned_fp8_histories_ != nullptr) cudaFreeHost(pinned_fp8_histories_);
  fp8_buf_ = nullptr;
  fp8_bytes_ = 0;
  pinned_fp8_stats_ = nullptr;
  pinned_fp8_scales_used_ = nullptr;
  pinned_fp8_histories_ = nullptr;
  fp8_stats_ = fp8_step_stats_ = nullptr;
  fp8_amax_ = fp8_scales_ = fp8_histories_ = fp8_max_ = nullptr;
  fp8_active_ = nullptr;
  fp8_m_ = 0;
}

absl::Status CudaEngine::SetUpFp8() {
  ReleaseFp8();
  const size_t n_layers = gemm_layers_.size();
  pass_fp8_.assign(n_layers, false);
  fp8_linear_.resize(n_layers);
  fp8_ws_.assign(n_layers, nullptr);
  fp8_ws_bytes_.assign(n_layers, 0);
  if (!recipe_.is_fp8()) return absl::OkStatus();
  absl::StatusOr<Fp8LinearOptions> options = Fp8LinearOptionsFromRecipe(recipe_);
  if (!options.ok()) return absl::FailedPreconditionError(options.status().message());
  fp8_options_ = *options;
  if (fp8_gemm_ == nullptr) {
    // Shares the BF16 runner's workspace: GEMMs run one after another on stream_.
    absl::StatusOr<std::unique_ptr<Fp8GemmRunner>> runner =
        Fp8GemmRunner::Create(Buf<void>("ws.gemm"), kGemmWorkspaceBytes);
    if (!runner.ok()) return runner.status();
    fp8_gemm_ = std::move(*runner);
  }
  const int n_t = static_cast<int>(n_layers) * kFp8LinearRoles;
  const int len = recipe_.amax_history_len;
  const int64_t max_m = int64_t{max_batch_} * max_seq_len_;
  // Workspaces for every layer that runs FP8 at any step (warm-up only removes layers).
  const LayerPlan plan = PlanLayers(std::numeric_limits<int64_t>::max());
  size_t bytes = 0;
  auto take = [&bytes](size_t b) {
    const size_t at = bytes;
    bytes += (std::max<size_t>(b, 1) + 255) / 256 * 256;
    return at;
  };
  const size_t at_stats = take(n_t * sizeof(Fp8CastStats));
  const size_t at_step = take(n_t * sizeof(Fp8CastStats));
  const size_t at_amax = take(n_t * sizeof(float));
  const size_t at_scales = take(n_t * sizeof(float));
  const size_t at_hist = take(static_cast<size_t>(n_t) * len * sizeof(float));
  const size_t at_max = take(n_t * sizeof(float));
  const size_t at_active = take(n_t);
  std::vector<size_t> at_ws(n_layers, 0);
  // Layers run one after another on stream_, so they share one scratch (Fp8Linear's per-call
  // FP8 copies of X and dY); only the weight caches and the saved Q(X)^T are per layer.
  fp8_scratch_bytes_ = 0;
  for (size_t i = 0; i < n_layers; ++i) {
    if (!plan.fp8[i]) continue;
    const GemmShape shape = Fp8LayerShape(i, max_m);
    fp8_ws_bytes_[i] = Fp8Linear::WorkspaceBytes(shape, fp8_options_, /*shared_scratch=*/true);
    fp8_scratch_bytes_ =
        std::max(fp8_scratch_bytes_, Fp8Linear::ScratchBytes(shape, fp8_options_));
    at_ws[i] = take(fp8_ws_bytes_[i]);
  }
  const size_t at_scratch = take(fp8_scratch_bytes_);
  if (cudaMalloc(&fp8_buf_, bytes) != cudaSuccess) {
    (void)cudaGetLastError();
    fp8_buf_ = nullptr;
    return absl::ResourceExhaustedError(absl::StrCat(
        "the FP8 state of recipe ", std::string(RecipeKindName(recipe_.kind)), " needs ", bytes,
        " bytes of GPU memory that are not free"));
  }
  fp8_bytes_ = bytes;
  char* base = static_cast<char*>(fp8_buf_);
  fp8_stats_ = reinterpret_cast<Fp8CastStats*>(base + at_stats);
  fp8_step_stats_ = reinterpret_cast<Fp8CastStats*>(base + at_step);
  fp8_amax_ = reinterpret_cast<float*>(base + at_amax);
  fp8_scales_ = reinterpret_cast<float*>(base + at_scales);
  fp8_histories_ = reinterpret_cast<float*>(base + at_hist);
  fp8_max_ = reinterpret_cast<float*>(base + at_max);
  fp8_active_ = reinterpret_cast<uint8_t*>(base + at_active);
  for (size_t i = 0; i < n_layers; ++i) {
    if (plan.fp8[i]) fp8_ws_[i] = base + at_ws[i];
  }
  fp8_scratch_ = base + at_scratch;
  CUDA_RETURN_IF_ERROR(cudaMemsetAsync(fp8_buf_, 0, at_max, stream_));
  std::vector<float> fp8_max(n_t);
  for (int t = 0; t < n_t; ++t) fp8_max[t] = Fp8Max(Fp8RoleFormat(t % kFp8LinearRoles));
  CUDA_RETURN_IF_ERROR(cudaMemcpyAsync(fp8_max_, fp8_max.data(), n_t * sizeof(float),
                                       cudaMemcpyHostToDevice, stream_));
  CUDA_RETURN_IF_ERROR(cudaMallocHost(reinterpret_cast<void**>(&pinned_fp8_stats_),
                                      n_t * sizeof(Fp8CastStats)));
  CUDA_RETURN_IF_ERROR(
      cudaMallocHost(reinterpret_cast<void**>(&pinned_fp8_scales_used_), n_t * sizeof(float)));
  const size_t history_floats = std::max<size_t>(static_cast<size_t>(n_t) * len, 1);
  CUDA_RETURN_IF_ERROR(cudaMallocHost(reinterpret_cast<void**>(&pinned_fp8_histories_),
                                      history_floats * sizeof(float)));
  // Scales of 1.0, zero histories.
  return WriteFp8Scaling(std::vector<float>(n_t, 1.f),
                         std::vector<float>(static_cast<size_t>(n_t) * len, 0.f));
}

absl::Status CudaEngine::ReadFp8Scaling(std::vector<float>* scales,
                                        std::vector<float>* histories) const {
  const size_t n_t = gemm_layers_.size() * kFp8LinearRoles;
  const size_t len = recipe_.kind == RecipeKind::kDelayed ? recipe_.amax_history_len : 0;
  scales->assign(n_t, 1.f);
  histories->assign(n_t * len, 0.f);
  if (fp8_scales_ == nullptr) return absl::OkStatus();
  CUDA_RETURN_IF_ERROR(cudaStreamSynchronize(stream_));
  CUDA_RETURN_IF_ERROR(
      cudaMemcpy(scales->data(), fp8_scales_, n_t * sizeof(float), cudaMemcpyDeviceToHost));
  if (len > 0) {
    CUDA_RETURN_IF_ERROR(cudaMemcpy(histories->data(), fp8_histories_, n_t * len * sizeof(float),
                                    cudaMemcpyDeviceToHost));
  }
  return absl::OkStatus();
}

absl::Status CudaEngine::WriteFp8Scaling(const std::vector<float>& scales,
                                         const std::vector<float>& histories) {
  if (fp8_scales_ == nullptr) return absl::OkStatus();
  CUDA_RETURN_IF_ERROR(cudaStreamSynchronize(stream_));
  CUDA_RETURN_IF_ERROR(cudaMemcpy(fp8_scales_, scales.data(), scales.size() * sizeof(float),
                                  cudaMemcpyHostToDevice));
  if (!histories.empty()) {
    CUDA_RETURN_IF_ERROR(cudaMemcpy(fp8_histories_, histories.data(),
                                    histories.size() * sizeof(float), cudaMemcpyHostToDevice));
  }
  return absl::OkStatus();
}

absl::Status CudaEngine::BeginFp8Pass(const std::vector<bool>& fp8, int64_t m,
                                      bool cast_weights) {
  pass_fp8_ = fp8;
  bool any = false;
  for (size_t i = 0; i < pass_fp8_.size(); ++i) {
    if (pass_fp8_[i] && fp8_ws_[i] == nullptr) pass_fp8_[i] = false;
    any = any || pass_fp8_[i];
  }
  if (!any) return absl::OkStatus();
  bool rebuilt = false;
  if (m != fp8_m_) {
    // Fp8Linear holds its shape; a new token count re-carves the same workspaces (sized for
    // the largest batch) and the weights are cast again.
    for (size_t i = 0; i < gemm_layers_.size(); ++i) {
      fp8_linear_[i].reset();
      if (fp8_ws_[i] == nullptr) continue;
      const int t = static_cast<int>(i) * kFp8LinearRoles;
      Fp8LinearScales scales{fp8_scales_ + t + kFp8Input, fp8_scales_ + t + kFp8Weight,
                             fp8_scales_ + t + kFp8GradOutput};
      absl::StatusOr<Fp8Linear> layer =
          Fp8Linear::Create(fp8_gemm_.get(), Fp8LayerShape(i, m), fp8_options_, scales,
                            fp8_ws_[i], fp8_ws_bytes_[i], fp8_stats_ + t, fp8_scratch_,
                            fp8_scratch_bytes_);
      if (!layer.ok()) {
        fp8_m_ = 0;
        return layer.status();
      }
      fp8_linear_[i] = std::make_unique<Fp8Linear>(std::move(*layer));
    }
    fp8_m_ = m;
    rebuilt = true;
  }
  if (cast_weights || rebuilt) {
    for (size_t i = 0; i < gemm_layers_.size(); ++i) {
      if (!pass_fp8_[i]) continue;
      const float* w = ParamF32(GemmLayerWeight(model_, gemm_layers_[i]));
      fp8_linear_[i]->CastWeights(w + Fp8FirstRow(i) * fp8_linear_[i]->shape().k, stream_);
    }
  }
  return absl::OkStatus();
}

fp8d::v1::AmaxRecord CudaEngine::AmaxTelemetry() const {
  if (!telemetry_meta_.valid) return cached_record_;
  const TelemetryMeta& meta = telemetry_meta_;
  fp8d::v1::AmaxRecord record;
  record.set_step(meta.step + 1);
  bool any = false;
  for (bool b : meta.fp8) any = any || b;
  if (!any) return record;
  if (cudaEventSynchronize(telemetry_event_) != cudaSuccess) return record;
  constexpr fp8d::v1::TensorRole kRoleProtos[kFp8LinearRoles] = {
      fp8d::v1::INPUT, fp8d::v1::WEIGHT, fp8d::v1::GRAD_OUTPUT};
  const int len = meta.recipe.amax_history_len;
  for (size_t i = 0; i < meta.fp8.size(); ++i) {
    if (!meta.fp8[i]) continue;
    // Elements each tensor's stats counted: the FP8 part of the layer (attn.qkv's V rows only
    // under skip_attention_qk).
    const GemmShape g = Fp8LayerShape(i, 1);
    const int64_t counts[kFp8LinearRoles] = {meta.tokens * g.k, g.n * g.k * meta.micro_batches,
                                             meta.tokens * g.n};
    for (int r = 0; r < kFp8LinearRoles; ++r) {
      const int t = static_cast<int>(i) * kFp8LinearRoles + r;
      const Fp8CastStats& st = pinned_fp8_stats_[t];
      const Fp8Format format =
          r == kFp8GradOutput ? meta.recipe.grad_format() : meta.recipe.forward_format();
      fp8d::v1::TensorAmax* out = record.add_tensors();
      out->set_layer(gemm_layers_[i]);
      out->set_role(kRoleProtos[r]);
      out->set_amax(st.amax);
      out->set_frac_saturated(counts[r] > 0 ? float(st.saturated) / counts[r] : 0.f);
      out->set_frac_underflow(st.nonzero > 0 ? float(st.underflow) / st.nonzero : 0.f);
      out->set_format(std::string(Fp8FormatName(format)));
      switch (meta.recipe.kind) {
        case RecipeKind::kDelayed:
          out->set_scale(pinned_fp8_scales_used_[t]);  // the scale the step quantized with
          for (int h = 0; h < len; ++h) out->add_history(pinned_fp8_histories_[t * len + h]);
          break;
        case RecipeKind::kCurrent:
          out->set_scale(ComputeScale(st.amax, Fp8Max(format), meta.recipe.margin, 1.f));
          break;
        default:
          out->set_scale(0.f);  // a scale per row or block
          break;
      }
    }
  }
  return record;
}

// ---------------------------------------------------------------------------------------------
// Batches

absl::Status CudaEngine::ValidateBatch(const TokenBatch& b, const char* what) const {
  if (b.batch < 1 || b.batch > max_batch_) {
    return absl::InvalidArgumentError(absl::StrCat(what, ".batch = ", b.batch,
                                                   " is out of range: allowed 1..", max_batch_));
  }
  if (b.seq_len < 1 || b.seq_len > max_seq_len_) {
    return absl::InvalidArgumentError(absl::StrCat(
        what, ".seq_len = ", b.seq_len, " is out of range: allowed 1..", max_seq_len_));
  }
  const size_t n = static_cast<size_t>(b.batch) * b.seq_len;
  if (b.inputs.size() != n || b.targets.size() != n) {
    return absl::InvalidArgumentError(absl::StrCat(what, " holds ", b.inputs.size(), " inputs and ",
                                                   b.targets.size(), " targets; expected ", n));
  }
  for (size_t i = 0; i < n; ++i) {
    if (b.inputs[i] < 0 || b.inputs[i] >= model_.vocab_size || b.targets[i] < 0 ||
        b.targets[i] >= model_.vocab_size) {
      return absl::InvalidArgumentError(absl::StrCat(what, " token at ", i, " is outside 0..",
                                                     model_.vocab_size - 1));
    }
  }
  return absl::OkStatus();
}

absl::Status CudaEngine::UploadTokens(const TokenBatch& b) {
  const size_t n = static_cast<size_t>(b.batch) * b.seq_len;
  // The previous upload may still be in flight from the staging buffer.
  CUDA_RETURN_IF_ERROR(cudaStreamSynchronize(stream_));
  std::copy(b.inputs.begin(), b.inputs.end(), pinned_tokens_);
  std::copy(b.targets.begin(), b.targets.end(), pinned_tokens_ + n);
  CUDA_RETURN_IF_ERROR(cudaMemcpyAsync(Buf<int32_t>("act.tokens"), pinned_tokens_,
                                       n * sizeof(int32_t), cudaMemcpyHostToDevice, stream_));
  CUDA_RETURN_IF_ERROR(cudaMemcpyAsync(Buf<int32_t>("act.targets"), pinned_tokens_ + n,
                                       n * sizeof(int32_t), cudaMemcpyHostToDevice, stream_));
  return absl::OkStatus();
}

// ---------------------------------------------------------------------------------------------
// Forward

AttentionDims CudaEngine::AttentionShape(const BatchShape& shape) const {
  AttentionDims dims;
  dims.batch = shape.batch;
  dims.seq_len = shape.seq_len;
  dims.n_head = model_.n_head;
  dims.n_kv_head = model_.n_kv_head;
  dims.head_dim = model_.head_dim();
  dims.qkv_stride = model_.qkv_dim();
  return dims;
}

absl::Status CudaEngine::Attention(int l, const BatchShape& shape, bool backward) {
  const std::string a = ActPrefix(l);
  const AttentionDims dims = AttentionShape(shape);
  // Q, K and V are column ranges of the fused QKV rows: [q heads | k heads | v heads].
  const bf16* q = Buf<bf16>(a + "qkv");
  const bf16* k = q + model_.d_model;
  const bf16* v = k + model_.kv_dim();
  if (cudnn_attention_ != nullptr && (!backward || options_.cudnn_attention_backward)) {
    absl::Status s;
    if (!backward) {
      s = cudnn_attention_->Forward(Buf<bf16>(a + "attn"), Buf<float>(a + "lse"), q, k, v, dims,
                                    Buf<void>("ws.attention"), attention_ws_bytes_);
    } else {
      bf16* dq = Buf<bf16>("scratch.dwide");
      s = cudnn_attention_->Backward(dq, dq + model_.d_model, dq + model_.d_model + model_.kv_dim(),
                                     Buf<bf16>("scratch.dnarrow"), q, k, v, Buf<bf16>(a + "attn"),
                                     Buf<float>(a + "lse"), dims, Buf<void>("ws.attention"),
                                     attention_ws_bytes_);
    }
    if (s.ok()) return s;
    // A shape the graphs were not prepared for and cuDNN cannot run: the reference kernel
    // computes the same function.
    if (!reported_attention_fallback_) {
      reported_attention_fallback_ = true;
      attention_note_ = std::string(s.message());
      std::fprintf(stderr, "fp8d: cuDNN attention failed for a batch shape, using the reference "
                   "kernel for it: %s\n", attention_note_.c_str());
    }
  }
  if (!backward) {
    ReferenceAttentionForward(stream_, Buf<bf16>(a + "attn"), Buf<float>(a + "lse"), q, k, v,
                              dims);
    return absl::OkStatus();
  }
  // dQKV lands in scratch.dwide with the same column layout; d(attn) is in scratch.dnarrow.
  bf16* dq = Buf<bf16>("scratch.dwide");
  bf16* dk = dq + model_.d_model;
  bf16* dv = dk + model_.kv_dim();
  ReferenceAttentionBackward(stream_, dq, dk, dv, Buf<bf16>("scratch.dnarrow"), q, k, v,
                             Buf<bf16>(a + "attn"), Buf<float>(a + "lse"), dims,
                             Buf<void>("ws.attention"), attention_ws_bytes_);
  return absl::OkStatus();
}

absl::Status CudaEngine::Forward(const BatchShape& shape) {
  const int64_t n = shape.tokens();
  const int d = model_.d_model, ff = model_.d_ff, qkv = model_.qkv_dim();
  EmbeddingForward(stream_, Buf<bf16>("act.0.res_in"), Buf<int32_t>("act.tokens"),
                   ParamF32("model.embed_tokens.weight"), static_cast<int>(n), d);
  for (int l = 0; l < model_.n_layer; ++l) {
    const std::string p = LayerPrefix(l), a = ActPrefix(l);
    const std::string next =
        l + 1 < model_.n_layer ? ActPrefix(l + 1) + "res_in" : std::string("act.final.res");
    bf16* res_in = Buf<bf16>(a + "res_in");
    bf16* res_mid = Buf<bf16>(a + "res_mid");
    bf16* res_out = Buf<bf16>(next);

    if (Fp8Linear* f = FusedFp8Layer(p + "self_attn.qkv_proj.weight", n, d)) {
      RmsNormForwardToFp8(stream_, Buf<float>(a + "rstd1"), res_in,
                          ParamF32(p + "input_layernorm.weight"), n, d, model_.norm_eps,
                          f->InputTarget(pass_for_backward_));
      if (absl::Status s = f->ForwardQuantized(Buf<bf16>(a + "qkv"), stream_); !s.ok()) return s;
    } else {
      RmsNormForward(stream_, Buf<bf16>(a + "ln1"), Buf<float>(a + "rstd1"), res_in,
                     ParamF32(p + "input_layernorm.weight"), n, d, model_.norm_eps);
      if (absl::Status s = Linear(Buf<bf16>(a + "ln1"), n, p + "self_attn.qkv_proj.weight",
                                  Buf<bf16>(a + "qkv"), qkv, d);
          !s.ok())
        return s;
    }
    // The K heads follow the Q heads in each QKV row, so one launch rotates both.
    RopeForward(stream_, Buf<bf16>(a + "qkv"), shape.batch, shape.seq_len,
                model_.n_head + model_.n_kv_head, model_.head_dim(), qkv, model_.rope_theta);
    if (absl::Status s = Attention(l, shape, /*backward=*/false); !s.ok()) return s;
    // res_mid = res_in + o_proj(attn), the residual added by the GEMM.
    if (absl::Status s = Linear(Buf<bf16>(a + "attn"), n, p + "self_attn.o_proj.weight", res_mid,
                                d, d, res_in);
        !s.ok())
      return s;

    if (Fp8Linear* f = FusedFp8Layer(p + "mlp.gate_up_proj.weight", n, d)) {
      RmsNormForwardToFp8(stream_, Buf<float>(a + "rstd2"), res_mid,
                          ParamF32(p + "post_attention_layernorm.weight"), n, d, model_.norm_eps,
                          f->InputTarget(pass_for_backward_));
      if (absl::Status s = f->ForwardQuantized(Buf<bf16>(a + "gate_up"), stream_); !s.ok()) {
        return s;
      }
    } else {
      RmsNormForward(stream_, Buf<bf16>(a + "ln2"), Buf<float>(a + "rstd2"), res_mid,
                     ParamF32(p + "post_attention_layernorm.weight"), n, d, model_.norm_eps);
      if (absl::Status s = Linear(Buf<bf16>(a + "ln2"), n, p + "mlp.gate_up_proj.weight",
                                  Buf<bf16>(a + "gate_up"), 2 * int64_t{ff}, d);
          !s.ok())
        return s;
    }
    if (Fp8Linear* f = FusedFp8Layer(p + "mlp.down_proj.weight", n, ff)) {
      SwiGluForwardToFp8(stream_, Buf<bf16>(a + "gate_up"), n, ff,
                         f->InputTarget(pass_for_backward_));
      if (absl::Status s = f->ForwardQuantized(res_out, stream_, res_mid); !s.ok()) return s;
    } else {
      SwiGluForward(stream_, Buf<bf16>(a + "h"), Buf<bf16>(a + "gate_up"), n, ff);
      if (absl::Status s =
              Linear(Buf<bf16>(a + "h"), n, p + "mlp.down_proj.weight", res_out, d, ff, res_mid);
          !s.ok())
        return s;
    }
  }
  RmsNormForward(stream_, Buf<bf16>("act.final.ln"), Buf<float>("act.final.rstd"),
                 Buf<bf16>("act.final.res"), ParamF32("model.norm.weight"), n, d,
                 model_.norm_eps);
  return absl::OkStatus();
}

absl::StatusOr<float> CudaEngine::ReadMeanLoss(int64_t tokens) {
  float* mean = ScalarSlot(kMeanLossSlot);
  MeanLoss(stream_, mean, Buf<float>("act.loss"), static_cast<int>(tokens));
  CUDA_RETURN_IF_ERROR(cudaMemcpyAsync(pinned_scalars_, mean, sizeof(float),
                                       cudaMemcpyDeviceToHost, stream_));
  CUDA_RETURN_IF_ERROR(cudaStreamSynchronize(stream_));
  return pinned_scalars_[0];
}

// ---------------------------------------------------------------------------------------------
// Backward (gradients accumulate into grad.f32; dloss already folded into dlogits)

absl::Status CudaEngine::Backward(const BatchShape& shape) {
  const int64_t n = shape.tokens();
  const int d = model_.d_model, ff = model_.d_ff, qkv = model_.qkv_dim();
  bf16* dres = Buf<bf16>("scratch.dres");
  bf16* dln = Buf<bf16>("scratch.dln");
  bf16* dwide = Buf<bf16>("scratch.dwide");
  bf16* dnarrow = Buf<bf16>("scratch.dnarrow");
  void* ws = Buf<void>("ws.norm");
  const size_t norm_ws_bytes = norm_ws_bytes_;

  // Final norm: d(final residual) from d(final norm output).
  RmsNormBackward(stream_, dres, Grad("model.norm.weight"), dln, Buf<bf16>("act.final.res"),
                  ParamF32("model.norm.weight"), Buf<float>("act.final.rstd"), n, d,
                  /*accumulate_dx=*/false, ws, norm_ws_bytes);
  for (int l = model_.n_layer - 1; l >= 0; --l) {
    const std::string p = LayerPrefix(l), a = ActPrefix(l);
    // MLP: res_out = res_mid + down(swiglu(gate_up(norm2(res_mid)))).
    if (absl::Status s = LinearBackward(dres, Buf<bf16>(a + "h"), n, p + "mlp.down_proj.weight",
                                        dnarrow, d, ff);
        !s.ok())
      return s;
    if (Fp8Linear* f = FusedFp8Layer(p + "mlp.gate_up_proj.weight", n, 2 * int64_t{ff})) {
      SwiGluBackwardToFp8(stream_, dnarrow, Buf<bf16>(a + "gate_up"), n, ff,
                          f->GradOutputTarget());
      if (absl::Status s = f->BackwardQuantized(dln, Grad(p + "mlp.gate_up_proj.weight"), stream_);
          !s.ok())
        return s;
    } else {
      SwiGluBackward(stream_, dwide, dnarrow, Buf<bf16>(a + "gate_up"), n, ff);
      if (absl::Status s = LinearBackward(dwide, Buf<bf16>(a + "ln2"), n,
                                          p + "mlp.gate_up_proj.weight", dln, 2 * int64_t{ff}, d);
          !s.ok())
        return s;
    }
    RmsNormBackward(stream_, dres, Grad(p + "post_attention_layernorm.weight"), dln,
                    Buf<bf16>(a + "res_mid"), ParamF32(p + "post_attention_layernorm.weight"),
                    Buf<float>(a + "rstd2"), n, d, /*accumulate_dx=*/true, ws, norm_ws_bytes);
    // Attention: res_mid = res_in + o_proj(attn(rope(qkv(norm1(res_in))))).
    if (absl::Status s = LinearBackward(dres, Buf<bf16>(a + "attn"), n,
                                        p + "self_attn.o_proj.weight", dnarrow, d, d);
        !s.ok())
      return s;
    if (absl::Status s = Attention(l, shape, /*backward=*/true); !s.ok()) return s;
    RopeBackward(stream_, dwide, shape.batch, shape.seq_len, model_.n_head + model_.n_kv_head,
                 model_.head_dim(), qkv, model_.rope_theta);
    if (absl::Status s = LinearBackward(dwide, Buf<bf16>(a + "ln1"), n,
                                        p + "self_attn.qkv_proj.weight", dln, qkv, d);
        !s.ok())
      return s;
    RmsNormBackward(stream_, dres, Grad(p + "input_layernorm.weight"), dln,
                    Buf<bf16>(a + "res_in"), ParamF32(p + "input_layernorm.weight"),
                    Buf<float>(a + "rstd1"), n, d, /*accumulate_dx=*/true, ws, norm_ws_bytes);
  }
  EmbeddingBackward(stream_, Grad("model.embed_tokens.weight"), Buf<int32_t>("act.tokens"), dres,
                    static_cast<int>(n), d, model_.vocab_size, ws, norm_ws_bytes);
  return absl::OkStatus();
}

// ---------------------------------------------------------------------------------------------
// Steps

absl::StatusOr<StepResult> CudaEngine::TrainStep(absl::Span<const TokenBatch> micro_batches,
                                                 const OptimizerStepArgs& args) {
  if (micro_batches.empty()) {
    return absl::InvalidArgumentError("TrainStep needs at least one micro-batch");
  }
  for (size_t i = 0; i < micro_batches.size(); ++i) {
    if (absl::Status s =
            ValidateBatch(micro_batches[i], absl::StrCat("micro_batches[", i, "]").c_str());
        !s.ok())
      return s;
  }
  const LayerPlan plan = PlanLayers(args.step);
  const bool any_fp8 = plan.fp8_count() > 0;
  const int n_t = static_cast<int>(gemm_layers_.size()) * kFp8LinearRoles;
  if (any_fp8) {
    for (size_t i = 0; i < micro_batches.size(); ++i) {
      const int64_t tokens = int64_t{micro_batches[i].batch} * micro_batches[i].seq_len;
      if (tokens % 16 != 0) {
        return absl::InvalidArgumentError(absl::StrCat(
            "micro_batches[", i, "] holds ", tokens,
            " tokens (batch x seq_len); FP8 layers need a multiple of 16"));
      }
    }
  }
  next_step_ = args.step + 1;
  CUDA_RETURN_IF_ERROR(
      cudaMemsetAsync(Buf<void>("grad.f32"), 0, param_count_ * sizeof(float), stream_));
  int64_t step_tokens = 0;
  if (any_fp8) {
    // The step's stats start empty; only the tensors of FP8 layers merge into them.
    CUDA_RETURN_IF_ERROR(
        cudaMemsetAsync(fp8_step_stats_, 0, n_t * sizeof(Fp8CastStats), stream_));
    CUDA_RETURN_IF_ERROR(cudaMemsetAsync(fp8_amax_, 0, n_t * sizeof(float), stream_));
    std::vector<uint8_t> active(n_t, 0);
    for (size_t i = 0; i < plan.fp8.size(); ++i) {
      for (int r = 0; r < kFp8LinearRoles; ++r) active[i * kFp8LinearRoles + r] = plan.fp8[i];
    }
    // Pageable source: the copy has taken the bytes when it returns.
    CUDA_RETURN_IF_ERROR(cudaMemcpyAsync(fp8_active_, active.data(), n_t,
                                         cudaMemcpyHostToDevice, stream_));
  }
  // After the step (applied or skipped, as on the CPU engine): the delayed update, then the
  // telemetry copies into pinned memory, read by AmaxTelemetry without stalling the step.
  auto end_fp8 = [&]() -> absl::Status {
    telemetry_meta_.valid = true;
    telemetry_meta_.step = args.step;
    telemetry_meta_.recipe = recipe_;
    telemetry_meta_.fp8 = plan.fp8;
    telemetry_meta_.tokens = step_tokens;
    telemetry_meta_.micro_batches = static_cast<int64_t>(micro_batches.size());
    if (!any_fp8) return absl::OkStatus();
    CUDA_RETURN_IF_ERROR(cudaMemcpyAsync(pinned_fp8_scales_used_, fp8_scales_,
                                         n_t * sizeof(float), cudaMemcpyDeviceToHost, stream_));
    if (recipe_.kind == RecipeKind::kDelayed) {
      // One launch for all tensors. Those of layers that ran BF16 this step push an amax of 0
      // where the CPU engine leaves them alone; no update runs before the first FP8 step and
      // the set of FP8 layers is fixed after it, so the two differ only when a delayed ->
      // delayed switch with AMAX_KEEP changes which layers run FP8.
      DelayedScalingUpdate(fp8_amax_, fp8_histories_, recipe_.amax_history_len, fp8_max_, n_t,
                           recipe_.amax_algo, recipe_.margin, fp8_scales_, nullptr, stream_);
      if (recipe_.amax_history_len > 0) {
        CUDA_RETURN_IF_ERROR(cudaMemcpyAsync(
            pinned_fp8_histories_, fp8_histories_,
            static_cast<size_t>(n_t) * recipe_.amax_history_len * sizeof(float),
            cudaMemcpyDeviceToHost, stream_));
      }
    }
    CUDA_RETURN_IF_ERROR(cudaMemcpyAsync(pinned_fp8_stats_, fp8_step_stats_,
                                         n_t * sizeof(Fp8CastStats), cudaMemcpyDeviceToHost,
                                         stream_));
    CUDA_RETURN_IF_ERROR(cudaEventRecord(telemetry_event_, stream_));
    return absl::OkStatus();
  };
  // As on the CPU engine: each micro-batch's mean loss is weighted by 1 / (micro-batches), so
  // gradients and the reported loss are means over micro-batches.
  const float dloss = 1.f / static_cast<float>(micro_batches.size());
  float loss = 0.f;
  bool first = true;
  for (const TokenBatch& b : micro_batches) {
    const BatchShape shape{b.batch, b.seq_len};
    if (absl::Status s = UploadTokens(b); !s.ok()) return s;
    pass_for_backward_ = true;
    // The weights are cast once per step (again if the token count changes), or before every
    // micro-batch without policy.cache_fp8_weights: the same bytes, since weights and scales
    // change only between steps, so the CPU engine (which quantizes W at every call) agrees.
    const bool cast_weights = first || !recipe_.policy.cache_fp8_weights;
    if (absl::Status s = BeginFp8Pass(plan.fp8, shape.tokens(), cast_weights); !s.ok()) return s;
    first = false;
    if (absl::Status s = Forward(shape); !s.ok()) return s;
    if (absl::Status s = LmHeadAndLoss(shape, dloss, /*backward=*/true); !s.ok()) return s;
    if (absl::Status s = Backward(shape); !s.ok()) return s;
    if (any_fp8) {
      MergeFp8StepStats(fp8_step_stats_, fp8_stats_, fp8_active_, fp8_amax_, n_t, stream_);
      step_tokens += shape.tokens();
    }
    absl::StatusOr<float> mean = ReadMeanLoss(shape.tokens());
    if (!mean.ok()) return mean.status();
    loss += *mean * dloss;
  }

  StepResult result;
  result.loss = loss;
  // One reduction over the whole gradient vector (parameters are contiguous), then the norm
  // and the clipping factor on the device; the host reads the norm to report it and to decide
  // whether the update is skipped.
  double* partials = reinterpret_cast<double*>(Buf<char>("scratch.scalars"));
  float* norm = ScalarSlot(kGradNormSlot);
  float* clip = ScalarSlot(kClipSlot);
  GradSquaredNormPartials(stream_, partials, Buf<float>("grad.f32"), param_count_);
  GradNormFinalize(stream_, norm, clip, partials, kGradNormBlocks, args.grad_clip);
  CUDA_RETURN_IF_ERROR(
      cudaMemcpyAsync(pinned_scalars_, norm, sizeof(float), cudaMemcpyDeviceToHost, stream_));
  CUDA_RETURN_IF_ERROR(cudaStreamSynchronize(stream_));
  result.grad_norm = pinned_scalars_[0];
  if (!std::isfinite(result.loss) || !std::isfinite(result.grad_norm)) {
    result.skipped = true;
    if (absl::Status s = end_fp8(); !s.ok()) return s;
    return result;
  }
  ++adam_step_;
  for (const ParamSlot& slot : slots_) {
    AdamWParams a;
    a.lr = args.lr;
    a.beta1 = args.beta1;
    a.beta2 = args.beta2;
    a.eps = args.eps;
    a.weight_decay = slot.is_norm ? 0.f : args.weight_decay;
    a.step = adam_step_;
    AdamWUpdate(stream_, Buf<float>("param.f32") + slot.offset,
                Buf<bf16>("param.bf16") + slot.offset, Buf<float>("adam.m") + slot.offset,
                Buf<float>("adam.v") + slot.offset, Buf<float>("grad.f32") + slot.offset,
                slot.numel, a, clip);
  }
  if (absl::Status s = end_fp8(); !s.ok()) return s;
  CUDA_RETURN_IF_ERROR(cudaGetLastError());
  return result;
}

absl::StatusOr<float> CudaEngine::EvalLoss(const TokenBatch& batch) {
  if (absl::Status s = ValidateBatch(batch, "batch"); !s.ok()) return s;
  const BatchShape shape{batch.batch, batch.seq_len};
  if (absl::Status s = UploadTokens(batch); !s.ok()) return s;
  // The plan of the next training step, as the CPU engine; a token count FP8 cannot take runs
  // BF16 throughout.
  std::vector<bool> fp8 = PlanLayers(next_step_).fp8;
  if (shape.tokens() % 16 != 0) fp8.assign(fp8.size(), false);
  pass_for_backward_ = false;
  if (absl::Status s = BeginFp8Pass(fp8, shape.tokens(), /*cast_weights=*/true); !s.ok())
    return s;
  if (absl::Status s = Forward(shape); !s.ok()) return s;
  if (absl::Status s = LmHeadAndLoss(shape, 1.f, /*backward=*/false); !s.ok()) return s;
  return ReadMeanLoss(shape.tokens());
}

}  // namespace fp8d::kernels
