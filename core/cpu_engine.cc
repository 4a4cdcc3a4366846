#include "core/cpu_engine.h"

#include <unistd.h>

#include <cmath>
#include <fstream>
#include <set>
#include <string>
#include <utility>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/strip.h"
#include "core/fp8_gemm_threshold.h"
#include "core/layer_policy.h"
#include "core/ref/adamw.h"
#include "core/ref/grad_norm.h"

namespace fp8d {
namespace {

constexpr char kMxfp8Unsupported[] =
    "recipe mxfp8 needs sm_100 (Blackwell) or newer; the CPU engine emulates Hopper-class FP8 "
    "only";
constexpr char kOptimStep[] = "optim.step";

std::string CpuModelName() {
  std::ifstream in("/proc/cpuinfo");
  std::string line;
  while (std::getline(in, line)) {
    if (!absl::StartsWith(line, "model name")) continue;
    const size_t colon = line.find(':');
    if (colon == std::string::npos) break;
    return std::string(absl::StripAsciiWhitespace(line.substr(colon + 1)));
  }
  return "unknown CPU";
}

DeviceInfo CpuDeviceInfo() {
  DeviceInfo info;
  info.engine = "cpu";
  info.name = CpuModelName();
  const long pages = sysconf(_SC_PHYS_PAGES);
  const long page_size = sysconf(_SC_PAGE_SIZE);
  if (pages > 0 && page_size > 0) info.memory_bytes = int64_t{pages} * page_size;
  info.supported_recipes = {"bf16", "delayed", "current", "rowwise", "blockwise"};
  info.unsupported_recipes = {"mxfp8: needs sm_100 or newer"};
  return info;
}

HostTensor Zeros(const std::vector<int64_t>& shape) {
  HostTensor t;
  t.shape = shape;
  t.data.assign(t.numel(), 0.f);
  return t;
}

std::string ShapeString(const std::vector<int64_t>& shape) {
  return absl::StrCat("[", absl::StrJoin(shape, ", "), "]");
}

}  // namespace

absl::StatusOr<std::unique_ptr<CpuEngine>> CpuEngine::Create(const ModelConfig& model,
                                                             const RecipeConfig& recipe,
                                                             uint64_t seed) {
  if (recipe.kind == RecipeKind::kMxfp8) return absl::FailedPreconditionError(kMxfp8Unsupported);
  return std::unique_ptr<CpuEngine>(new CpuEngine(model, recipe, seed));
}

CpuEngine::CpuEngine(const ModelConfig& model, const RecipeConfig& recipe, uint64_t seed)
    : config_(model),
      recipe_(recipe),
      device_(CpuDeviceInfo()),
      specs_(ParamSpecs(model)),
      weights_(InitWeights(model, seed)),
      tokens_per_micro_batch_(model.max_seq_len),
      cpu_model_(model),
      fp8_(model, recipe) {
  for (const ParamSpec& spec : specs_) {
    grads_[spec.name] = Zeros(spec.shape);
    adam_m_[spec.name] = Zeros(spec.shape);
    adam_v_[spec.name] = Zeros(spec.shape);
  }
}

absl::Status CpuEngine::CheckBatch(const TokenBatch& b, const std::string& field) const {
  if (b.batch < 1) {
    return absl::InvalidArgumentError(
        absl::StrCat(field, ".batch = ", b.batch, " is out of range: allowed >= 1"));
  }
  if (b.seq_len < 1 || b.seq_len > config_.max_seq_len) {
    return absl::InvalidArgumentError(absl::StrCat(field, ".seq_len = ", b.seq_len,
                                                   " is out of range: allowed 1..",
                                                   config_.max_seq_len, " (model.max_seq_len)"));
  }
  const size_t n = static_cast<size_t>(b.batch) * b.seq_len;
  for (const auto& [name, tokens] : {std::pair{"inputs", &b.inputs}, {"targets", &b.targets}}) {
    if (tokens->size() != n) {
      return absl::InvalidArgumentError(absl::StrCat(field, ".", name, " has ", tokens->size(),
                                                     " tokens, expected batch * seq_len = ", n));
    }
    for (size_t i = 0; i < n; ++i) {
      if ((*tokens)[i] < 0 || (*tokens)[i] >= config_.vocab_size) {
        return absl::InvalidArgumentError(
            absl::StrCat(field, ".", name, "[", i, "] = ", (*tokens)[i],
                         " is out of range: allowed 0..", config_.vocab_size - 1));
      }
    }
  }
  return absl::OkStatus();
}

// The GPU's measured threshold, not a CPU one: the reference engine plans the layers the CUDA
// engine would run in FP8, so the two compute the same function.
LayerPlan CpuEngine::PlanLayers(int64_t step) const {
  return PlanFp8Layers(config_, recipe_, step, tokens_per_micro_batch_,
                       AutoMinGemmVolume(recipe_.kind));
}

absl::StatusOr<StepResult> CpuEngine::TrainStep(absl::Span<const TokenBatch> micro_batches,
                                                const OptimizerStepArgs& args) {
  if (micro_batches.empty()) {
    return absl::InvalidArgumentError("micro_batches is empty: allowed at least 1 micro-batch");
  }
  if (args.step < 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("args.step = ", args.step, " is out of range: allowed >= 0"));
  }
  for (size_t i = 0; i < micro_batches.size(); ++i) {
    if (absl::Status s = CheckBatch(micro_batches[i], absl::StrCat("micro_batches[", i, "]"));
        !s.ok()) {
      return s;
    }
  }
  tokens_per_micro_batch_ = int64_t{micro_batches[0].batch} * micro_batches[0].seq_len;
  next_step_ = args.step + 1;

  const std::vector<GemmQuant> gemms = fp8_.BeginStep(PlanLayers(args.step));
  for (auto& [name, g] : grads_) std::fill(g.data.begin(), g.data.end(), 0.f);
  const float dloss = 1.f / static_cast<float>(micro_batches.size());
  float loss = 0.f;
  for (const TokenBatch& mb : micro_batches) {
    loss += cpu_model_.ForwardBackward(weights_, mb, gemms, dloss, &grads_) * dloss;
  }

  std::vector<std::pair<const float*, int64_t>> grad_list;
  for (const ParamSpec& spec : specs_) {
    const HostTensor& g = grads_.at(spec.name);
    grad_list.emplace_back(g.data.data(), g.numel());
  }
  StepResult result;
  result.loss = loss;
  result.grad_norm = ref::GlobalGradNorm(grad_list);
  result.skipped = !std::isfinite(result.loss) || !std::isfinite(result.grad_norm);
  if (!result.skipped) {
    ++optim_step_;
    const float clip = ref::ClipFactor(result.grad_norm, args.grad_clip);
    for (const ParamSpec& spec : specs_) {
      ref::AdamWArgs adam{
          args.lr,    args.beta1, args.beta2, args.eps, spec.is_norm ? 0.f : args.weight_decay,
          optim_step_};
      HostTensor& w = weights_.at(spec.name);
      ref::AdamWUpdate(w.data.data(), grads_.at(spec.name).data.data(),
                       adam_m_.at(spec.name).data.data(), adam_v_.at(spec.name).data.data(),
                       w.numel(), adam, clip);
    }
  }
  fp8_.EndStep(args.step);
  return result;
}

absl::StatusOr<float> CpuEngine::EvalLoss(const TokenBatch& batch) {
  if (absl::Status s = CheckBatch(batch, "batch"); !s.ok()) return s;
  const std::vector<GemmQuant> gemms = fp8_.EvalQuant(PlanLayers(next_step_));
  return cpu_model_.ForwardBackward(weights_, batch, gemms, 1.f, nullptr);
}

absl::Status CpuEngine::SetRecipe(const RecipeConfig& recipe, fp8d::v1::AmaxHandling handling) {
  if (recipe.kind == RecipeKind::kMxfp8) return absl::FailedPreconditionError(kMxfp8Unsupported);
  recipe_ = recipe;
  fp8_.SetRecipe(recipe, handling);
  return absl::OkStatus();
}

fp8d::v1::AmaxRecord CpuEngine::AmaxTelemetry() const { return fp8_.Telemetry(); }

absl::StatusOr<TensorMap> CpuEngine::SaveState() const {
  TensorMap state = weights_;
  for (const ParamSpec& spec : specs_) {
    state["optim.m." + spec.name] = adam_m_.at(spec.name);
    state["optim.v." + spec.name] = adam_v_.at(spec.name);
  }
  state[kOptimStep] = HostTensor{{1}, {static_cast<float>(optim_step_)}};
  fp8_.Save(&state);
  return state;
}

absl::Status CpuEngine::LoadState(const TensorMap& state) {
  // Everything is checked before anything is written, so a rejected state changes nothing.
  std::set<std::string> expected;
  auto check = [&](const std::string& name, const std::vector<int64_t>& shape) -> absl::Status {
    expected.insert(name);
    auto it = state.find(name);
    if (it == state.end()) {
      return absl::InvalidArgumentError(absl::StrCat("state tensor \"", name, "\" is missing"));
    }
    if (it->second.shape != shape ||
        it->second.data.size() != static_cast<size_t>(it->second.numel())) {
      return absl::InvalidArgumentError(absl::StrCat("state tensor \"", name, "\" has shape ",
                                                     ShapeString(it->second.shape), ", expected ",
                                                     ShapeString(shape)));
    }
    return absl::OkStatus();
  };
  for (const ParamSpec& spec : specs_) {
    for (const std::string& name : {spec.name, "optim.m." + spec.name, "optim.v." + spec.name}) {
      if (absl::Status s = check(name, spec.shape); !s.ok()) return s;
    }
  }
  if (absl::Status s = check(kOptimStep, {1}); !s.ok()) return s;
  const float step = state.at(kOptimStep).data[0];
  if (!(step >= 0.f) || step != std::floor(step)) {
    return absl::InvalidArgumentError(absl::StrCat("state tensor \"optim.step\" = ", step,
                                                   " is out of range: allowed integers >= 0"));
  }
  // Under delayed, the scaling state of every GEMM layer and role (names and shapes as Save
  // writes them); other recipes have none and ignore fp8.* tensors.
  TensorMap fp8_names;
  fp8_.Save(&fp8_names);
  for (const auto& [name, tensor] : fp8_names) {
    if (absl::Status s = check(name, tensor.shape); !s.ok()) return s;
  }
  const bool delayed = recipe_.kind == RecipeKind::kDelayed;
  for (const auto& [name, tensor] : state) {
    if (expected.contains(name) || (!delayed && absl::StartsWith(name, "fp8."))) continue;
    return absl::InvalidArgumentError(
        absl::StrCat("state tensor \"", name, "\" is not part of this engine's state (model ",
                     config_.preset.empty() ? "explicit" : config_.preset, ", recipe ",
                     std::string(RecipeKindName(recipe_.kind)), ")"));
  }

  for (const ParamSpec& spec : specs_) {
    weights_[spec.name] = state.at(spec.name);
    adam_m_[spec.name] = state.at("optim.m." + spec.name);
    adam_v_[spec.name] = state.at("optim.v." + spec.name);
  }
  optim_step_ = static_cast<int64_t>(step);
  fp8_.Load(state);
  return absl::OkStatus();
}

int64_t CpuEngine::MemoryBytes() const {
  int64_t params = 0;
  for (const ParamSpec& spec : specs_) {
    int64_t n = 1;
    for (int64_t d : spec.shape) n *= d;
    params += n;
  }
  // Weights, gradients and two AdamW moments, all FP32, plus activations.
  return 4 * params * 4 + cpu_model_.ActivationBytes();
}

}  // namespace fp8d
