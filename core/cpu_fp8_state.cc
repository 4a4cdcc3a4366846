#include "core/cpu_fp8_state.h"

#include <utility>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "core/fp8_format.h"
#include "core/model_weights.h"

namespace fp8d {
namespace {

constexpr int kInput = 0, kWeight = 1, kGradOutput = 2;
constexpr const char* kRoleNames[CpuFp8State::kRoles] = {"input", "weight", "grad_output"};
constexpr fp8d::v1::TensorRole kRoleProtos[CpuFp8State::kRoles] = {
    fp8d::v1::INPUT, fp8d::v1::WEIGHT, fp8d::v1::GRAD_OUTPUT};
// DeepSeek-V3 / Transformer Engine block length along the contraction dimension.
constexpr int kBlockLen = 128;

}  // namespace

CpuFp8State::CpuFp8State(const ModelConfig& model, const RecipeConfig& recipe)
    : model_(model), recipe_(recipe), layers_(GemmLayerNames(model)) {
  ResetScaling();
  step_fp8_.assign(layers_.size(), false);
  step_stats_.assign(layers_.size(), {});
}

void CpuFp8State::ResetScaling() {
  scaling_.clear();
  if (recipe_.kind != RecipeKind::kDelayed) return;
  scaling_.resize(layers_.size());
  for (auto& roles : scaling_) {
    for (TensorScaling& t : roles) {
      t.history = AmaxHistory(recipe_.amax_history_len, recipe_.amax_algo);
      t.scale = 1.f;
    }
  }
}

void CpuFp8State::SetRecipe(const RecipeConfig& recipe, fp8d::v1::AmaxHandling handling) {
  const bool keep = recipe_.kind == RecipeKind::kDelayed && recipe.kind == RecipeKind::kDelayed &&
                    handling != fp8d::v1::AMAX_RESET;
  recipe_ = recipe;
  if (!keep) {
    ResetScaling();
    return;
  }
  for (auto& roles : scaling_) {
    for (int r = 0; r < kRoles; ++r) {
      TensorScaling& t = roles[r];
      AmaxHistory history(recipe_.amax_history_len, recipe_.amax_algo);
      history.set_window(t.history.window());
      t.history = std::move(history);
      // Under an unchanged recipe this reproduces the current scale; under a new format,
      // margin or window it is the scale the new recipe would have computed.
      t.scale = ComputeScale(t.history.Reduced(), Fp8Max(RoleFormat(r)), recipe_.margin, t.scale);
    }
  }
}

Fp8Format CpuFp8State::RoleFormat(int role) const {
  return role == kGradOutput ? recipe_.grad_format() : recipe_.forward_format();
}

ref::Fp8OperandQuant CpuFp8State::OperandQuant(int layer, int role) const {
  ref::Fp8OperandQuant q;
  q.format = RoleFormat(role);
  switch (recipe_.kind) {
    case RecipeKind::kDelayed:
      q.scaling = ref::Fp8Scaling::kTensor;
      q.scale = scaling_[layer][role].scale;
      break;
    case RecipeKind::kCurrent:
      q.scaling = ref::Fp8Scaling::kCurrentTensor;
      q.margin = recipe_.margin;
      break;
    case RecipeKind::kRowwise:
      q.scaling = ref::Fp8Scaling::kBlocks;
      q.block_rows = 1;
      q.block_cols = 0;  // the whole contraction dimension
      break;
    case RecipeKind::kBlockwise:
      q.scaling = ref::Fp8Scaling::kBlocks;
      q.block_rows =
          role == kWeight && recipe_.weight_block == WeightBlock::k128x128 ? kBlockLen : 1;
      q.block_cols = kBlockLen;
      break;
    case RecipeKind::kBf16:
    case RecipeKind::kMxfp8:
      break;  // never planned FP8 on this engine
  }
  return q;
}

std::vector<GemmQuant> CpuFp8State::Quant(const LayerPlan& plan,
                                          std::vector<ref::Fp8LinearStats>* stats) const {
  std::vector<GemmQuant> out(layers_.size());
  for (size_t i = 0; i < layers_.size(); ++i) {
    out[i].fp8 = plan.fp8[i];
    if (!out[i].fp8) continue;
    ref::Fp8LinearQuant& q = out[i].quant;
    q.input = OperandQuant(i, kInput);
    q.weight = OperandQuant(i, kWeight);
    q.grad_output = OperandQuant(i, kGradOutput);
    if (recipe_.policy.skip_attention_qk && absl::EndsWith(layers_[i], "attn.qkv")) {
      q.fp32_out_rows = model_.d_model + model_.kv_dim();
    }
    if (stats != nullptr) out[i].stats = &(*stats)[i];
  }
  return out;
}

std::vector<GemmQuant> CpuFp8State::BeginStep(const LayerPlan& plan) {
  step_fp8_ = plan.fp8;
  step_stats_.assign(layers_.size(), {});
  return Quant(plan, &step_stats_);
}

std::vector<GemmQuant> CpuFp8State::EvalQuant(const LayerPlan& plan) const {
  return Quant(plan, nullptr);
}

void CpuFp8State::EndStep(int64_t step) {
  // The record is built now, so that a recipe change before the next step does not relabel it.
  telemetry_.Clear();
  telemetry_.set_step(step + 1);
  for (size_t i = 0; i < layers_.size(); ++i) {
    if (!step_fp8_[i]) continue;
    const ref::Fp8LinearStats& s = step_stats_[i];
    const QuantStats* stats[kRoles] = {&s.input, &s.weight, &s.grad_output};
    for (int r = 0; r < kRoles; ++r) {
      const float fp8_max = Fp8Max(RoleFormat(r));
      fp8d::v1::TensorAmax* t = telemetry_.add_tensors();
      t->set_layer(layers_[i]);
      t->set_role(kRoleProtos[r]);
      t->set_amax(stats[r]->amax);
      t->set_frac_saturated(stats[r]->frac_saturated());
      t->set_frac_underflow(stats[r]->frac_underflow());
      t->set_format(std::string(Fp8FormatName(RoleFormat(r))));
      switch (recipe_.kind) {
        case RecipeKind::kDelayed: {
          TensorScaling& ts = scaling_[i][r];
          t->set_scale(ts.scale);  // the scale this step quantized with
          ts.history.Push(stats[r]->amax);
          ts.scale = ComputeScale(ts.history.Reduced(), fp8_max, recipe_.margin, ts.scale);
          for (float a : ts.history.window()) t->add_history(a);
          break;
        }
        case RecipeKind::kCurrent:
          // Each micro-batch used its own scale; report the one the step's amax gives.
          t->set_scale(ComputeScale(stats[r]->amax, fp8_max, recipe_.margin, 1.f));
          break;
        default:
          t->set_scale(0.f);  // a scale per row or block
          break;
      }
    }
  }
}

fp8d::v1::AmaxRecord CpuFp8State::Telemetry() const { return telemetry_; }

std::string CpuFp8State::TensorName(int layer, int role) const {
  return absl::StrCat("fp8.", layers_[layer], ".", kRoleNames[role]);
}

void CpuFp8State::Save(TensorMap* out) const {
  for (size_t i = 0; i < scaling_.size(); ++i) {
    for (int r = 0; r < kRoles; ++r) {
      const TensorScaling& t = scaling_[i][r];
      const std::string base = TensorName(i, r);
      (*out)[base + ".scale"] = HostTensor{{1}, {t.scale}};
      (*out)[base + ".amax_history"] =
          HostTensor{{static_cast<int64_t>(t.history.len())}, t.history.window()};
    }
  }
}

void CpuFp8State::Load(const TensorMap& state) {
  for (size_t i = 0; i < scaling_.size(); ++i) {
    for (int r = 0; r < kRoles; ++r) {
      const std::string base = TensorName(i, r);
      scaling_[i][r].scale = state.at(base + ".scale").data[0];
      scaling_[i][r].history.set_window(state.at(base + ".amax_history").data);
    }
  }
}

}  // namespace fp8d
