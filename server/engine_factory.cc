// Implemented with the CPU engine and, when built with CUDA, the CUDA engine.
#include "server/engine_factory.h"

#include <fstream>
#include <string>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_split.h"
#include "core/cpu_engine.h"

#ifdef FP8D_HAVE_CUDA
#include "kernels/cuda_engine.h"
#endif

namespace fp8d {
namespace {

// Bytes the CPU engine needs: FP32 weights, gradients and two AdamW moments, plus the
// activations it keeps for backward at max_batch x max_seq_len (per layer: residuals, norms,
// QKV, attention output, SwiGLU input and output; attention scores are recomputed per head;
// and logits with their gradient).
int64_t EstimateCpuBytes(const ModelConfig& m, int max_batch, int max_seq_len) {
  const int64_t tokens = int64_t{max_batch} * max_seq_len;
  const int64_t per_layer_per_token = 6 * int64_t{m.d_model} + m.qkv_dim() + 3 * int64_t{m.d_ff};
  const int64_t activations =
      tokens * (m.n_layer * per_layer_per_token + 4 * int64_t{m.d_model} + 2 * int64_t{m.vocab_size});
  return 4 * (4 * m.ParamCount() + activations);
}

// MemAvailable from /proc/meminfo in bytes; 0 when unknown (then no check is made).
int64_t AvailableHostBytes() {
  std::ifstream in("/proc/meminfo");
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind("MemAvailable:", 0) != 0) continue;
    const std::vector<std::string> parts = absl::StrSplit(line, ' ', absl::SkipEmpty());
    int64_t kib = 0;
    if (parts.size() >= 2 && absl::SimpleAtoi(parts[1], &kib)) return kib * 1024;
  }
  return 0;
}

std::string GiB(int64_t bytes) { return absl::StrFormat("%.2f GiB", bytes / double(1ll << 30)); }

absl::StatusOr<std::unique_ptr<Engine>> CreateCpuEngine(const ModelConfig& model,
                                                        const RecipeConfig& recipe,
                                                        int max_batch, int max_seq_len,
                                                        uint64_t seed) {
  const int64_t need = EstimateCpuBytes(model, max_batch, max_seq_len);
  const int64_t available = AvailableHostBytes();
  if (available > 0 && need > available) {
    return absl::ResourceExhaustedError(absl::StrCat(
        "the CPU engine needs about ", GiB(need), " for ", model.ParamCount(),
        " parameters (x4 FP32 copies) and activations at batch ", max_batch, " x seq_len ",
        max_seq_len, ", but only ", GiB(available),
        " of host memory is available: choose a smaller model, batch_size or seq_len"));
  }
  absl::StatusOr<std::unique_ptr<CpuEngine>> engine = CpuEngine::Create(model, recipe, seed);
  if (!engine.ok()) return engine.status();
  return std::unique_ptr<Engine>(*std::move(engine));
}

// ---- CUDA engine (kernels/) -------------------------------------------------------------
// Everything CUDA-specific stays between these markers; without nvcc the build has no
// kernels/ library and `cuda` is FAILED_PRECONDITION.
#ifdef FP8D_HAVE_CUDA
constexpr bool kBuiltWithCuda = true;

using kernels::CudaEngine;

absl::StatusOr<DeviceInfo> ProbeCuda() { return CudaEngine::Probe(); }

absl::StatusOr<std::unique_ptr<Engine>> CreateCudaEngine(const ModelConfig& model,
                                                         const RecipeConfig& recipe,
                                                         int max_batch, int max_seq_len,
                                                         uint64_t seed) {
  // The CUDA engine plans its memory slab and reports RESOURCE_EXHAUSTED itself, before it
  // allocates anything.
  absl::StatusOr<std::unique_ptr<CudaEngine>> engine =
      CudaEngine::Create(model, recipe, seed, max_batch, max_seq_len);
  if (!engine.ok()) return engine.status();
  return std::unique_ptr<Engine>(*std::move(engine));
}
#else
constexpr bool kBuiltWithCuda = false;

absl::StatusOr<DeviceInfo> ProbeCuda() {
  return absl::FailedPreconditionError(
      "this fp8d was built without CUDA (no nvcc at configure time): use --engine cpu or auto");
}

absl::StatusOr<std::unique_ptr<Engine>> CreateCudaEngine(const ModelConfig&, const RecipeConfig&,
                                                         int, int, uint64_t) {
  return ProbeCuda().status();
}
#endif
// ---- end of the CUDA engine --------------------------------------------------------------

absl::Status UnknownChoice(const std::string& choice) {
  return absl::InvalidArgumentError(
      absl::StrCat("engine = \"", choice, "\" is unknown: allowed ", kEngineChoices));
}

// `auto` picks CUDA only when it was built in and a GPU answers the probe.
bool UseCuda(const std::string& choice) {
  if (choice == "cuda") return true;
  return choice == "auto" && kBuiltWithCuda && ProbeCuda().ok();
}

}  // namespace

absl::StatusOr<DeviceInfo> ProbeDevice(const std::string& engine_choice) {
  if (engine_choice != "auto" && engine_choice != "cpu" && engine_choice != "cuda") {
    return UnknownChoice(engine_choice);
  }
  if (UseCuda(engine_choice)) return ProbeCuda();
  // The CPU engine describes itself; the smallest preset makes that cheap.
  absl::StatusOr<ModelConfig> tiny = ResolveModelConfig([] {
    fp8d::v1::ModelConfig p;
    p.set_preset("tiny");
    return p;
  }());
  if (!tiny.ok()) return tiny.status();
  absl::StatusOr<std::unique_ptr<CpuEngine>> engine = CpuEngine::Create(*tiny, RecipeConfig{}, 0);
  if (!engine.ok()) return engine.status();
  return (*engine)->device();
}

absl::StatusOr<std::unique_ptr<Engine>> CreateEngine(const std::string& engine_choice,
                                                     const ModelConfig& model,
                                                     const RecipeConfig& recipe, int max_batch,
                                                     int max_seq_len, uint64_t seed) {
  if (engine_choice != "auto" && engine_choice != "cpu" && engine_choice != "cuda") {
    return UnknownChoice(engine_choice);
  }
  if (max_batch < 1 || max_seq_len < 1) {
    return absl::InvalidArgumentError(absl::StrCat("engine batch ", max_batch, " x seq_len ",
                                                   max_seq_len, " must both be >= 1"));
  }
  if (UseCuda(engine_choice)) {
    return CreateCudaEngine(model, recipe, max_batch, max_seq_len, seed);
  }
  return CreateCpuEngine(model, recipe, max_batch, max_seq_len, seed);
}

}  // namespace fp8d
