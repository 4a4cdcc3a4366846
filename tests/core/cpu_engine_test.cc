// CpuEngine behaviour: training makes progress, runs are reproducible bit for bit, state round
// trips exactly, FP8 recipes track the FP32 baseline, delayed scaling follows ComputeScale, and
// bad inputs are rejected with statuses that name the problem.
#include "core/cpu_engine.h"

#include <cmath>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include "core/fp8_format.h"
#include "core/fp8_scaling.h"
#include "core/model_config.h"
#include "core/model_weights.h"
#include "core/recipe_config.h"
#include "core/rng.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace fp8d {
namespace {

using ::testing::HasSubstr;

constexpr int kBatch = 2;
constexpr int kSeqLen = 16;
// FP8 losses on the tiny model stay within 0.2% of FP32 over the first steps, while one step
// lowers the loss by ~8%: 0.5% separates "tracks the baseline" from "trains differently".
constexpr float kFp8LossRelTol = 0.005f;

ModelConfig TinyModel() {
  fp8d::v1::ModelConfig proto;
  proto.set_preset("tiny");
  absl::StatusOr<ModelConfig> c = ResolveModelConfig(proto);
  EXPECT_TRUE(c.ok()) << c.status();
  return *c;
}

// These tests mean every GEMM layer (but the LM head) to run FP8 on the tiny model, whose layers
// are smaller than any measured automatic threshold (core/fp8_gemm_threshold.h) could allow: the
// policy says so explicitly. 16 is the smallest size FP8 GEMMs take.
constexpr int kEveryLayerMinGemmDim = 16;

fp8d::v1::Recipe RecipeProto(const std::string& name) {
  fp8d::v1::Recipe proto;
  proto.set_name(name);
  proto.mutable_policy()->set_min_gemm_dim(kEveryLayerMinGemmDim);
  return proto;
}

RecipeConfig Recipe(const std::string& name, const std::string& extra_weight_block = "") {
  fp8d::v1::Recipe proto = RecipeProto(name);
  if (!extra_weight_block.empty()) proto.set_weight_block(extra_weight_block);
  absl::StatusOr<RecipeConfig> r = ResolveRecipe(proto);
  EXPECT_TRUE(r.ok()) << r.status();
  return *r;
}

TokenBatch FixedBatch(uint64_t seed, int vocab) {
  TokenBatch b{kBatch, kSeqLen, {}, {}};
  Rng rng(seed);
  for (int i = 0; i < kBatch * kSeqLen; ++i) {
    b.inputs.push_back(static_cast<int32_t>(rng.NextBelow(vocab)));
    b.targets.push_back(static_cast<int32_t>(rng.NextBelow(vocab)));
  }
  return b;
}

OptimizerStepArgs Args(int64_t step) {
  OptimizerStepArgs a;
  a.step = step;
  a.lr = 3e-3f;
  a.weight_decay = 0.1f;
  a.grad_clip = 1.f;
  return a;
}

std::unique_ptr<CpuEngine> MakeEngine(const RecipeConfig& recipe, uint64_t seed = 1) {
  absl::StatusOr<std::unique_ptr<CpuEngine>> e = CpuEngine::Create(TinyModel(), recipe, seed);
  EXPECT_TRUE(e.ok()) << e.status();
  return std::move(*e);
}

// Losses of `steps` steps on a fixed batch, starting at step index `first`.
std::vector<float> Train(Engine& engine, int steps, int first = 0) {
  const TokenBatch batch = FixedBatch(42, engine.model().vocab_size);
  std::vector<float> losses;
  for (int s = first; s < first + steps; ++s) {
    absl::StatusOr<StepResult> r = engine.TrainStep({batch}, Args(s));
    EXPECT_TRUE(r.ok()) << r.status();
    EXPECT_FALSE(r->skipped);
    losses.push_back(r->loss);
  }
  return losses;
}

bool BitEqual(const HostTensor& a, const HostTensor& b) {
  return a.shape == b.shape && a.data.size() == b.data.size() &&
         std::memcmp(a.data.data(), b.data.data(), a.data.size() * sizeof(float)) == 0;
}

TEST(CpuEngine, TinyModelLossDecreasesOverThirtySteps) {
  auto engine = MakeEngine(Recipe("bf16"));
  const std::vector<float> losses = Train(*engine, 30);
  EXPECT_NEAR(losses.front(), std::log(256.f), 0.1f);  // near-uniform predictions at init
  EXPECT_LT(losses.back(), losses.front() - 1.f);
  absl::StatusOr<float> eval = engine->EvalLoss(FixedBatch(42, 256));
  ASSERT_TRUE(eval.ok()) << eval.status();
  EXPECT_LT(*eval, losses.back());  // the last step's update helped on the same batch
}

TEST(CpuEngine, SameSeedGivesBitIdenticalLossesAndOtherSeedDoesNot) {
  auto a = MakeEngine(Recipe("delayed"), 5);
  auto b = MakeEngine(Recipe("delayed"), 5);
  auto c = MakeEngine(Recipe("delayed"), 6);
  const std::vector<float> la = Train(*a, 4), lb = Train(*b, 4), lc = Train(*c, 4);
  EXPECT_EQ(std::memcmp(la.data(), lb.data(), la.size() * sizeof(float)), 0);
  EXPECT_NE(la, lc);
}

TEST(CpuEngine, EvalLossEqualsTheLossTrainStepReportsBeforeUpdating) {
  auto engine = MakeEngine(Recipe("bf16"));
  const TokenBatch batch = FixedBatch(42, 256);
  absl::StatusOr<float> eval = engine->EvalLoss(batch);
  ASSERT_TRUE(eval.ok());
  absl::StatusOr<StepResult> step = engine->TrainStep({batch}, Args(0));
  ASSERT_TRUE(step.ok());
  EXPECT_EQ(*eval, step->loss);
}

TEST(CpuEngine, MicroBatchGradientsAreAveraged) {
  // Two copies of one batch are the same objective as the batch alone.
  auto one = MakeEngine(Recipe("bf16"));
  auto two = MakeEngine(Recipe("bf16"));
  const TokenBatch batch = FixedBatch(42, 256);
  absl::StatusOr<StepResult> r1 = one->TrainStep({batch}, Args(0));
  absl::StatusOr<StepResult> r2 = two->TrainStep({batch, batch}, Args(0));
  ASSERT_TRUE(r1.ok() && r2.ok());
  EXPECT_FLOAT_EQ(r1->loss, r2->loss);
  EXPECT_NEAR(r1->grad_norm, r2->grad_norm, 1e-5f * r1->grad_norm);
}

TEST(CpuEngine, SaveStateThenLoadStateInAnotherEngineGivesIdenticalNextLosses) {
  auto a = MakeEngine(Recipe("delayed"), 3);
  Train(*a, 3);
  absl::StatusOr<TensorMap> state = a->SaveState();
  ASSERT_TRUE(state.ok()) << state.status();
  EXPECT_EQ(state->at("optim.step").data, std::vector<float>{3.f});
  auto b = MakeEngine(Recipe("delayed"), 99);
  ASSERT_TRUE(b->LoadState(*state).ok());
  const std::vector<float> la = Train(*a, 3, 3), lb = Train(*b, 3, 3);
  EXPECT_EQ(std::memcmp(la.data(), lb.data(), la.size() * sizeof(float)), 0);
}

TEST(CpuEngine, LoadStateRejectsMissingMisshapenAndUnknownTensorsNamingThem) {
  auto engine = MakeEngine(Recipe("delayed"));
  const TensorMap good = *engine->SaveState();

  TensorMap missing = good;
  missing.erase("optim.v.model.norm.weight");
  absl::Status s = engine->LoadState(missing);
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(s.message()), HasSubstr("optim.v.model.norm.weight"));

  TensorMap misshapen = good;
  misshapen["fp8.layers.1.mlp.down.weight.amax_history"] = HostTensor{{3}, {0.f, 0.f, 0.f}};
  s = engine->LoadState(misshapen);
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(s.message()), HasSubstr("fp8.layers.1.mlp.down.weight.amax_history"));
  EXPECT_THAT(std::string(s.message()), HasSubstr("[3]"));
  EXPECT_THAT(std::string(s.message()), HasSubstr("[16]"));

  TensorMap unknown = good;
  unknown["lm_head.weight"] = good.at("model.embed_tokens.weight");  // the model is tied
  s = engine->LoadState(unknown);
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(s.message()), HasSubstr("lm_head.weight"));

  // A rejected state changed nothing: the engine still saves what it had.
  const TensorMap after = *engine->SaveState();
  ASSERT_EQ(after.size(), good.size());
  for (const auto& [name, t] : good) EXPECT_TRUE(BitEqual(t, after.at(name))) << name;
}

TEST(CpuEngine, DelayedScalesAfterAStepAreComputeScaleOfTheirHistory) {
  fp8d::v1::Recipe proto = RecipeProto("delayed");
  proto.set_amax_history_len(4);
  proto.set_margin(1);
  const RecipeConfig recipe = *ResolveRecipe(proto);
  auto engine = MakeEngine(recipe);
  const TensorMap before = *engine->SaveState();
  Train(*engine, 1);
  const TensorMap state = *engine->SaveState();
  const fp8d::v1::AmaxRecord telemetry = engine->AmaxTelemetry();
  // Every GEMM but the LM head (skipped by default), three roles each.
  ASSERT_EQ(telemetry.tensors_size(), 3 * 4 * TinyModel().n_layer);
  for (const fp8d::v1::TensorAmax& t : telemetry.tensors()) {
    const std::string role = t.role() == fp8d::v1::INPUT    ? "input"
                             : t.role() == fp8d::v1::WEIGHT ? "weight"
                                                            : "grad_output";
    const std::string base = "fp8." + t.layer() + "." + role;
    SCOPED_TRACE(base);
    EXPECT_EQ(t.scale(), 1.f);  // the first step quantizes with the initial scale
    EXPECT_GT(t.amax(), 0.f);
    EXPECT_EQ(t.format(), t.role() == fp8d::v1::GRAD_OUTPUT ? "e5m2" : "e4m3");
    const std::vector<float>& history = state.at(base + ".amax_history").data;
    EXPECT_EQ(history, std::vector<float>({t.amax(), 0.f, 0.f, 0.f}));
    ASSERT_EQ(t.history_size(), 4);
    EXPECT_EQ(t.history(0), t.amax());
    const float fp8_max = t.role() == fp8d::v1::GRAD_OUTPUT ? kE5M2Max : kE4M3Max;
    EXPECT_EQ(state.at(base + ".scale").data[0], ComputeScale(t.amax(), fp8_max, 1, 1.f));
    if (t.role() == fp8d::v1::WEIGHT) {
      // The weight's amax is max |W| of the weights the step started from.
      const HostTensor& w = before.at(GemmLayerWeight(TinyModel(), t.layer()));
      float amax = 0.f;
      for (float v : w.data) amax = std::max(amax, std::fabs(v));
      EXPECT_EQ(t.amax(), amax);
    }
  }
  // The next step quantizes with the scales the first one computed.
  Train(*engine, 1, 1);
  const fp8d::v1::AmaxRecord second = engine->AmaxTelemetry();
  for (const fp8d::v1::TensorAmax& t : second.tensors()) {
    if (t.layer() != "layers.0.attn.qkv" || t.role() != fp8d::v1::INPUT) continue;
    EXPECT_EQ(t.scale(), state.at("fp8.layers.0.attn.qkv.input.scale").data[0]);
    EXPECT_EQ(t.history_size(), 4);
  }
}

TEST(CpuEngine, Fp8RecipesGiveLossesCloseToBf16) {
  auto baseline = MakeEngine(Recipe("bf16"));
  const std::vector<float> bf16 = Train(*baseline, 4);
  const std::pair<std::string, std::string> recipes[] = {{"delayed", ""},
                                                         {"current", ""},
                                                         {"rowwise", ""},
                                                         {"blockwise", ""},
                                                         {"blockwise", "128x128"}};
  for (const auto& [name, block] : recipes) {
    SCOPED_TRACE(name + " " + block);
    auto engine = MakeEngine(Recipe(name, block));
    EXPECT_EQ(engine->PlanLayers(0).fp8_count(), 4 * TinyModel().n_layer);
    const std::vector<float> fp8 = Train(*engine, 4);
    for (size_t i = 0; i < fp8.size(); ++i) EXPECT_NEAR(fp8[i], bf16[i], kFp8LossRelTol * bf16[i]);
    EXPECT_NE(fp8, bf16);  // FP8 really ran
    EXPECT_GT(engine->AmaxTelemetry().tensors_size(), 0);
  }
  EXPECT_EQ(baseline->AmaxTelemetry().tensors_size(), 0);
}

TEST(CpuEngine, SkipAttentionQkQuantizesOnlyTheValueRowsOfQkv) {
  fp8d::v1::Recipe proto = RecipeProto("current");
  proto.mutable_policy()->set_skip_attention_qk(true);
  auto engine = MakeEngine(*ResolveRecipe(proto));
  Train(*engine, 1);
  const ModelConfig c = TinyModel();
  const fp8d::v1::AmaxRecord record = engine->AmaxTelemetry();
  // The weight amax is taken over the V rows only: they are all that is quantized.
  const HostTensor w = InitWeights(c, 1).at("model.layers.0.self_attn.qkv_proj.weight");
  float v_amax = 0.f, qk_amax = 0.f;
  for (int64_t i = 0; i < w.numel(); ++i) {
    const bool v_row = i / c.d_model >= c.d_model + c.kv_dim();
    float& amax = v_row ? v_amax : qk_amax;
    amax = std::max(amax, std::fabs(w.data[i]));
  }
  ASSERT_NE(v_amax, qk_amax);
  int checked = 0;
  for (const fp8d::v1::TensorAmax& t : record.tensors()) {
    if (t.layer() != "layers.0.attn.qkv" || t.role() != fp8d::v1::WEIGHT) continue;
    EXPECT_EQ(t.amax(), v_amax);
    ++checked;
  }
  EXPECT_EQ(checked, 1);
  // Losses still track the baseline.
  auto baseline = MakeEngine(Recipe("bf16"));
  auto fp8 = MakeEngine(*ResolveRecipe(proto));
  EXPECT_NEAR(Train(*fp8, 2)[1], Train(*baseline, 2)[1], kFp8LossRelTol * std::log(256.f));
}

TEST(CpuEngine, AmaxResetRestartsScalesAtOneAndKeepPreservesThem) {
  auto engine = MakeEngine(Recipe("delayed"));
  Train(*engine, 2);
  const TensorMap trained = *engine->SaveState();
  const std::string scale = "fp8.layers.1.mlp.gate_up.weight.scale";
  ASSERT_NE(trained.at(scale).data[0], 1.f);

  ASSERT_TRUE(engine->SetRecipe(Recipe("delayed"), fp8d::v1::AMAX_KEEP).ok());
  TensorMap kept = *engine->SaveState();
  EXPECT_TRUE(BitEqual(kept.at(scale), trained.at(scale)));
  EXPECT_TRUE(BitEqual(kept.at("fp8.layers.1.mlp.gate_up.weight.amax_history"),
                       trained.at("fp8.layers.1.mlp.gate_up.weight.amax_history")));

  ASSERT_TRUE(engine->SetRecipe(Recipe("delayed"), fp8d::v1::AMAX_RESET).ok());
  const TensorMap reset = *engine->SaveState();
  EXPECT_EQ(reset.at(scale).data, std::vector<float>{1.f});
  EXPECT_EQ(reset.at("fp8.layers.1.mlp.gate_up.weight.amax_history").data,
            std::vector<float>(16, 0.f));
  EXPECT_TRUE(BitEqual(reset.at("model.norm.weight"), trained.at("model.norm.weight")));

  // Recipes other than delayed carry no scaling state.
  ASSERT_TRUE(engine->SetRecipe(Recipe("current"), fp8d::v1::AMAX_KEEP).ok());
  EXPECT_EQ(engine->SaveState()->count(scale), 0u);
}

TEST(CpuEngine, Bf16WarmupStepsRunWithoutFp8AndRecordNoAmax) {
  fp8d::v1::Recipe proto = RecipeProto("delayed");
  proto.mutable_policy()->set_bf16_warmup_steps(1);
  auto engine = MakeEngine(*ResolveRecipe(proto));
  auto baseline = MakeEngine(Recipe("bf16"));
  EXPECT_EQ(engine->PlanLayers(0).fp8_count(), 0);
  EXPECT_EQ(engine->PlanLayers(1).fp8_count(), 4 * TinyModel().n_layer);
  const float warm = Train(*engine, 1)[0];
  EXPECT_EQ(warm, Train(*baseline, 1)[0]);  // step 0 is plain FP32
  EXPECT_EQ(engine->AmaxTelemetry().tensors_size(), 0);
  EXPECT_EQ(engine->SaveState()->at("fp8.layers.0.attn.qkv.input.amax_history").data[0], 0.f);
  Train(*engine, 1, 1);
  EXPECT_EQ(engine->AmaxTelemetry().tensors_size(), 3 * 4 * TinyModel().n_layer);
}

TEST(CpuEngine, GradNormIsReportedBeforeClippingAndClippingChangesTheUpdate) {
  auto clipped = MakeEngine(Recipe("bf16"));
  auto free = MakeEngine(Recipe("bf16"));
  const TokenBatch batch = FixedBatch(42, 256);
  OptimizerStepArgs tight = Args(0), none = Args(0);
  tight.grad_clip = 1e-3f;
  none.grad_clip = 0.f;
  absl::StatusOr<StepResult> a = clipped->TrainStep({batch}, tight);
  absl::StatusOr<StepResult> b = free->TrainStep({batch}, none);
  ASSERT_TRUE(a.ok() && b.ok());
  EXPECT_EQ(a->grad_norm, b->grad_norm);
  EXPECT_GT(a->grad_norm, 1e-3f);
  tight.step = none.step = 1;
  EXPECT_NE(clipped->TrainStep({batch}, tight)->loss, free->TrainStep({batch}, none)->loss);
}

TEST(CpuEngine, Mxfp8IsFailedPreconditionOnCreateAndSetRecipe) {
  absl::StatusOr<std::unique_ptr<CpuEngine>> e = CpuEngine::Create(TinyModel(), Recipe("mxfp8"), 1);
  ASSERT_EQ(e.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(std::string(e.status().message()), HasSubstr("sm_100"));
  auto engine = MakeEngine(Recipe("bf16"));
  const absl::Status s = engine->SetRecipe(Recipe("mxfp8"), fp8d::v1::AMAX_KEEP);
  EXPECT_EQ(s.code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(engine->recipe().kind, RecipeKind::kBf16);
}

TEST(CpuEngine, DeviceInfoListsHopperClassRecipes) {
  auto engine = MakeEngine(Recipe("bf16"));
  const DeviceInfo& d = engine->device();
  EXPECT_EQ(d.engine, "cpu");
  EXPECT_FALSE(d.name.empty());
  EXPECT_EQ(d.supported_recipes,
            std::vector<std::string>({"bf16", "delayed", "current", "rowwise", "blockwise"}));
  EXPECT_EQ(d.unsupported_recipes, std::vector<std::string>({"mxfp8: needs sm_100 or newer"}));
  EXPECT_GE(engine->MemoryBytes(), 16 * TinyModel().ParamCount());
}

TEST(CpuEngine, NanWeightSkipsTheStepAndLeavesWeightsAndMomentsUntouched) {
  auto engine = MakeEngine(Recipe("delayed"));
  Train(*engine, 1);
  TensorMap poisoned = *engine->SaveState();
  poisoned.at("model.norm.weight").data[0] = NAN;
  ASSERT_TRUE(engine->LoadState(poisoned).ok());
  absl::StatusOr<StepResult> r = engine->TrainStep({FixedBatch(42, 256)}, Args(1));
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_TRUE(r->skipped);
  EXPECT_FALSE(std::isfinite(r->loss));
  const TensorMap after = *engine->SaveState();
  for (const auto& [name, t] : poisoned) {
    if (name.rfind("fp8.", 0) == 0) continue;  // amaxes are still recorded
    EXPECT_TRUE(BitEqual(t, after.at(name))) << name;
  }
}

TEST(CpuEngine, RejectsBatchesWithOutOfRangeTokensOrWrongSizes) {
  auto engine = MakeEngine(Recipe("bf16"));
  TokenBatch bad = FixedBatch(1, 256);
  bad.targets[5] = 256;
  absl::StatusOr<StepResult> r = engine->TrainStep({bad}, Args(0));
  EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(r.status().message()), HasSubstr("micro_batches[0].targets[5] = 256"));
  TokenBatch short_batch = FixedBatch(1, 256);
  short_batch.inputs.pop_back();
  EXPECT_EQ(engine->EvalLoss(short_batch).status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(engine->TrainStep({}, Args(0)).status().code(), absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace fp8d
