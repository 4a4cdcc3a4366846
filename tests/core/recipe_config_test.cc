// Recipe validation: defaults, every error path (field, bad value and allowed values named in the
// message), and the proto round trip.
#include "core/recipe_config.h"

#include <string>

#include "gmock/gmock.h"
#include "google/protobuf/text_format.h"
#include "gtest/gtest.h"

namespace fp8d {
namespace {

using ::testing::AllOf;
using ::testing::HasSubstr;

fp8d::v1::Recipe Parse(const std::string& text) {
  fp8d::v1::Recipe proto;
  EXPECT_TRUE(google::protobuf::TextFormat::ParseFromString(text, &proto)) << text;
  return proto;
}

RecipeConfig Resolve(const std::string& text) {
  absl::StatusOr<RecipeConfig> r = ResolveRecipe(Parse(text));
  EXPECT_TRUE(r.ok()) << text << ": " << r.status();
  return r.ok() ? *r : RecipeConfig{};
}

// The status message of a recipe that must be rejected as INVALID_ARGUMENT.
std::string Error(const std::string& text) {
  absl::StatusOr<RecipeConfig> r = ResolveRecipe(Parse(text));
  EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument) << text;
  return std::string(r.status().message());
}

void ExpectSameRecipe(const RecipeConfig& a, const RecipeConfig& b) {
  EXPECT_EQ(a.kind, b.kind);
  EXPECT_EQ(a.format, b.format);
  EXPECT_EQ(a.amax_history_len, b.amax_history_len);
  EXPECT_EQ(a.amax_algo, b.amax_algo);
  EXPECT_EQ(a.margin, b.margin);
  EXPECT_EQ(a.weight_block, b.weight_block);
  EXPECT_EQ(a.policy.skip_lm_head, b.policy.skip_lm_head);
  EXPECT_EQ(a.policy.skip_attention_qk, b.policy.skip_attention_qk);
  EXPECT_EQ(a.policy.min_gemm_dim, b.policy.min_gemm_dim);
  EXPECT_EQ(a.policy.include, b.policy.include);
  EXPECT_EQ(a.policy.exclude, b.policy.exclude);
  EXPECT_EQ(a.policy.bf16_warmup_steps, b.policy.bf16_warmup_steps);
  EXPECT_EQ(a.policy.fp32_weight_grads, b.policy.fp32_weight_grads);
  EXPECT_EQ(a.policy.fast_accum_forward, b.policy.fast_accum_forward);
  EXPECT_EQ(a.policy.cache_fp8_weights, b.policy.cache_fp8_weights);
}

TEST(RecipeConfigTest, NamesOfKindsAndFormats) {
  EXPECT_EQ(RecipeKindName(RecipeKind::kBf16), "bf16");
  EXPECT_EQ(RecipeKindName(RecipeKind::kDelayed), "delayed");
  EXPECT_EQ(RecipeKindName(RecipeKind::kCurrent), "current");
  EXPECT_EQ(RecipeKindName(RecipeKind::kRowwise), "rowwise");
  EXPECT_EQ(RecipeKindName(RecipeKind::kBlockwise), "blockwise");
  EXPECT_EQ(RecipeKindName(RecipeKind::kMxfp8), "mxfp8");
  EXPECT_EQ(Fp8FormatName(Fp8Format::kE4M3), "e4m3");
  EXPECT_EQ(Fp8FormatName(Fp8Format::kE5M2), "e5m2");
}

TEST(RecipeConfigTest, EmptyRecipeIsBf16WithDefaultPolicy) {
  const RecipeConfig r = Resolve("");
  EXPECT_EQ(r.kind, RecipeKind::kBf16);
  EXPECT_FALSE(r.is_fp8());
  ExpectSameRecipe(r, RecipeConfig{});
}

TEST(RecipeConfigTest, DelayedDefaultsFollowTransformerEngine) {
  const RecipeConfig r = Resolve("name: 'delayed'");
  EXPECT_EQ(r.kind, RecipeKind::kDelayed);
  EXPECT_EQ(r.format, RecipeFormat::kHybrid);
  EXPECT_EQ(r.forward_format(), Fp8Format::kE4M3);
  EXPECT_EQ(r.grad_format(), Fp8Format::kE5M2);
  EXPECT_EQ(r.amax_history_len, 16);
  EXPECT_EQ(r.amax_algo, AmaxAlgo::kMax);
  EXPECT_EQ(r.margin, 0);
  EXPECT_TRUE(r.policy.skip_lm_head);
  EXPECT_FALSE(r.policy.skip_attention_qk);
  EXPECT_TRUE(r.policy.fp32_weight_grads);
  EXPECT_TRUE(r.policy.fast_accum_forward);
  EXPECT_TRUE(r.policy.cache_fp8_weights);
}

TEST(RecipeConfigTest, DefaultFormatDependsOnRecipe) {
  EXPECT_EQ(Resolve("name: 'current'").format, RecipeFormat::kHybrid);
  EXPECT_EQ(Resolve("name: 'rowwise'").format, RecipeFormat::kE4M3);
  EXPECT_EQ(Resolve("name: 'blockwise'").format, RecipeFormat::kE4M3);
  EXPECT_EQ(Resolve("name: 'mxfp8'").format, RecipeFormat::kE4M3);
  EXPECT_EQ(Resolve("name: 'current' format: 'e4m3'").grad_format(), Fp8Format::kE4M3);
}

TEST(RecipeConfigTest, ExplicitOptionsAreApplied) {
  const RecipeConfig d = Resolve(
      "name: 'delayed' format: 'e4m3' amax_history_len: 1024 amax_compute_algo: 'most_recent' "
      "margin: 32");
  EXPECT_EQ(d.format, RecipeFormat::kE4M3);
  EXPECT_EQ(d.amax_history_len, 1024);
  EXPECT_EQ(d.amax_algo, AmaxAlgo::kMostRecent);
  EXPECT_EQ(d.margin, 32);
  EXPECT_EQ(Resolve("name: 'delayed' amax_history_len: 1").amax_history_len, 1);
  EXPECT_EQ(Resolve("name: 'current' margin: 2").margin, 2);
  EXPECT_EQ(Resolve("name: 'blockwise' weight_block: '128x128'").weight_block,
            WeightBlock::k128x128);
  EXPECT_EQ(Resolve("name: 'blockwise' weight_block: '1x128'").weight_block, WeightBlock::k1x128);
}

TEST(RecipeConfigTest, PolicyOptionsAreApplied) {
  const RecipeConfig r = Resolve(R"pb(
    name: 'current'
    policy {
      skip_lm_head: false
      skip_attention_qk: true
      min_gemm_dim: 512
      include: 'layers\\.[0-9]+\\.mlp\\..*'
      exclude: 'layers\\.0\\..*'
      exclude: '.*down'
      bf16_warmup_steps: 100
      fast_accum_forward: false
      cache_fp8_weights: false
    }
  )pb");
  EXPECT_FALSE(r.policy.skip_lm_head);
  EXPECT_TRUE(r.policy.skip_attention_qk);
  EXPECT_EQ(r.policy.min_gemm_dim, 512);
  EXPECT_THAT(r.policy.include, testing::ElementsAre("layers\\.[0-9]+\\.mlp\\..*"));
  EXPECT_THAT(r.policy.exclude, testing::ElementsAre("layers\\.0\\..*", ".*down"));
  EXPECT_EQ(r.policy.bf16_warmup_steps, 100);
  EXPECT_TRUE(r.policy.fp32_weight_grads);
  EXPECT_FALSE(r.policy.fast_accum_forward);
  EXPECT_FALSE(r.policy.cache_fp8_weights);
}

TEST(RecipeConfigTest, Bf16WeightGradientsAreRefusedNotIgnored) {
  EXPECT_THAT(Error("name: 'delayed' policy { fp32_weight_grads: false }"),
              AllOf(HasSubstr("recipe.policy.fp32_weight_grads"), HasSubstr("allowed: true")));
  EXPECT_TRUE(
      Resolve("name: 'delayed' policy { fp32_weight_grads: true }").policy.fp32_weight_grads);
}

TEST(RecipeConfigTest, UnknownNameListsAllowedRecipes) {
  EXPECT_THAT(Error("name: 'fp8'"),
              AllOf(HasSubstr("recipe.name"), HasSubstr("\"fp8\""),
                    HasSubstr("bf16, delayed, current, rowwise, blockwise, mxfp8")));
  // Names are case-sensitive, as in job files.
  EXPECT_THAT(Error("name: 'Delayed'"), HasSubstr("recipe.name"));
}

TEST(RecipeConfigTest, UnknownFormatListsAllowedFormats) {
  EXPECT_THAT(Error("name: 'delayed' format: 'e5m2'"),
              AllOf(HasSubstr("recipe.format"), HasSubstr("\"e5m2\""), HasSubstr("hybrid, e4m3")));
}

TEST(RecipeConfigTest, HybridFormatRejectedForRowwiseAndBlockwise) {
  for (const char* name : {"rowwise", "blockwise"}) {
    EXPECT_THAT(Error(std::string("format: 'hybrid' name: '") + name + "'"),
                AllOf(HasSubstr("recipe.format"), HasSubstr("\"hybrid\""), HasSubstr(name),
                      HasSubstr("allowed e4m3")));
  }
}

TEST(RecipeConfigTest, FormatRejectedForBf16) {
  EXPECT_THAT(Error("name: 'bf16' format: 'e4m3'"),
              AllOf(HasSubstr("recipe.format"), HasSubstr("\"e4m3\""), HasSubstr("bf16"),
                    HasSubstr("delayed, current, rowwise, blockwise, mxfp8")));
}

TEST(RecipeConfigTest, AmaxHistoryLenOutOfRange) {
  for (const char* len : {"0", "-1", "1025"}) {
    EXPECT_THAT(Error(std::string("name: 'delayed' amax_history_len: ") + len),
                AllOf(HasSubstr("recipe.amax_history_len"), HasSubstr(std::string("= ") + len),
                      HasSubstr("1..1024")));
  }
}

TEST(RecipeConfigTest, UnknownAmaxComputeAlgo) {
  EXPECT_THAT(Error("name: 'delayed' amax_compute_algo: 'mean'"),
              AllOf(HasSubstr("recipe.amax_compute_algo"), HasSubstr("\"mean\""),
                    HasSubstr("max, most_recent")));
}

TEST(RecipeConfigTest, HistoryOptionsRejectedOutsideDelayed) {
  for (const char* name : {"bf16", "current", "rowwise", "blockwise", "mxfp8"}) {
    const std::string n = std::string("name: '") + name + "' ";
    EXPECT_THAT(Error(n + "amax_history_len: 16"),
                AllOf(HasSubstr("recipe.amax_history_len"), HasSubstr(name),
                      HasSubstr("only with delayed")));
    EXPECT_THAT(Error(n + "amax_compute_algo: 'max'"),
                AllOf(HasSubstr("recipe.amax_compute_algo"), HasSubstr(name),
                      HasSubstr("only with delayed")));
  }
}

TEST(RecipeConfigTest, MarginOutOfRangeOrOnWrongRecipe) {
  for (const char* margin : {"-1", "33"}) {
    EXPECT_THAT(Error(std::string("name: 'current' margin: ") + margin),
                AllOf(HasSubstr("recipe.margin"), HasSubstr(std::string("= ") + margin),
                      HasSubstr("0..32")));
  }
  for (const char* name : {"bf16", "rowwise", "blockwise", "mxfp8"}) {
    EXPECT_THAT(Error(std::string("margin: 1 name: '") + name + "'"),
                AllOf(HasSubstr("recipe.margin"), HasSubstr(name), HasSubstr("delayed, current")));
  }
}

TEST(RecipeConfigTest, WeightBlockUnknownOrOnWrongRecipe) {
  EXPECT_THAT(
      Error("name: 'blockwise' weight_block: '64x64'"),
      AllOf(HasSubstr("recipe.weight_block"), HasSubstr("\"64x64\""), HasSubstr("1x128, 128x128")));
  for (const char* name : {"bf16", "delayed", "current", "rowwise", "mxfp8"}) {
    EXPECT_THAT(
        Error(std::string("weight_block: '128x128' name: '") + name + "'"),
        AllOf(HasSubstr("recipe.weight_block"), HasSubstr(name), HasSubstr("only with blockwise")));
  }
}

TEST(RecipeConfigTest, NegativePolicyNumbersRejected) {
  EXPECT_THAT(Error("name: 'delayed' policy { min_gemm_dim: -1 }"),
              AllOf(HasSubstr("recipe.policy.min_gemm_dim"), HasSubstr("-1"), HasSubstr(">= 0")));
  EXPECT_THAT(
      Error("name: 'delayed' policy { bf16_warmup_steps: -5 }"),
      AllOf(HasSubstr("recipe.policy.bf16_warmup_steps"), HasSubstr("-5"), HasSubstr(">= 0")));
}

TEST(RecipeConfigTest, BadRegexNamesItsListAndIndex) {
  EXPECT_THAT(Error("name: 'delayed' policy { include: 'lm_head' include: 'layers.(' }"),
              AllOf(HasSubstr("recipe.policy.include[1]"), HasSubstr("\"layers.(\""),
                    HasSubstr("RE2")));
  EXPECT_THAT(Error("name: 'current' policy { exclude: '[a-' }"),
              AllOf(HasSubstr("recipe.policy.exclude[0]"), HasSubstr("\"[a-\"")));
  // Checked under bf16 too, where the policy is otherwise ignored.
  EXPECT_THAT(Error("policy { exclude: '*' }"), HasSubstr("recipe.policy.exclude[0]"));
}

TEST(RecipeConfigTest, ToProtoSetsEveryFieldTheRecipeUses) {
  RecipeConfig r;
  r.kind = RecipeKind::kDelayed;
  const fp8d::v1::Recipe p = ToProto(r);
  EXPECT_EQ(p.name(), "delayed");
  EXPECT_EQ(p.format(), "hybrid");
  EXPECT_TRUE(p.has_amax_history_len());
  EXPECT_EQ(p.amax_history_len(), 16);
  EXPECT_EQ(p.amax_compute_algo(), "max");
  EXPECT_TRUE(p.has_margin());
  EXPECT_TRUE(p.weight_block().empty());  // blockwise only
  EXPECT_TRUE(p.policy().has_skip_lm_head());
  EXPECT_TRUE(p.policy().has_skip_attention_qk());
  EXPECT_TRUE(p.policy().has_min_gemm_dim());
  EXPECT_TRUE(p.policy().has_bf16_warmup_steps());
  EXPECT_TRUE(p.policy().has_fp32_weight_grads());
  EXPECT_TRUE(p.policy().has_fast_accum_forward());
  EXPECT_TRUE(p.policy().has_cache_fp8_weights());

  r.kind = RecipeKind::kBlockwise;
  r.format = RecipeFormat::kE4M3;
  const fp8d::v1::Recipe b = ToProto(r);
  EXPECT_EQ(b.weight_block(), "1x128");
  EXPECT_FALSE(b.has_amax_history_len());
  EXPECT_FALSE(b.has_margin());

  EXPECT_EQ(ToProto(RecipeConfig{}).name(), "bf16");
  EXPECT_TRUE(ToProto(RecipeConfig{}).format().empty());
}

TEST(RecipeConfigTest, ResolveOfToProtoGivesSameRecipe) {
  const char* const kRecipes[] = {
      "",
      "name: 'delayed'",
      "name: 'delayed' format: 'e4m3' amax_history_len: 7 amax_compute_algo: 'most_recent' "
      "margin: 3",
      "name: 'current' margin: 1 policy { skip_lm_head: false min_gemm_dim: 128 }",
      "name: 'rowwise' policy { include: 'layers\\\\.1\\\\..*' exclude: '.*qkv' }",
      "name: 'blockwise' weight_block: '128x128' policy { bf16_warmup_steps: 20 }",
      "name: 'mxfp8' format: 'hybrid' policy { fp32_weight_grads: true cache_fp8_weights: false "
      "fast_accum_forward: false skip_attention_qk: true }",
  };
  for (const char* text : kRecipes) {
    SCOPED_TRACE(text);
    const RecipeConfig r = Resolve(text);
    absl::StatusOr<RecipeConfig> again = ResolveRecipe(ToProto(r));
    ASSERT_TRUE(again.ok()) << again.status();
    ExpectSameRecipe(*again, r);
    // And the stored form is stable.
    EXPECT_EQ(ToProto(*again).SerializeAsString(), ToProto(r).SerializeAsString());
  }
}

TEST(RecipeConfigTest, DeeplyNestedRegexIsRefusedNotACrash) {
  // std::regex recursed once per level and took the process down with SIGSEGV.
  fp8d::v1::Recipe recipe;
  recipe.set_name("delayed");
  recipe.mutable_policy()->add_include(std::string(20000, '(') + std::string(20000, ')'));
  absl::StatusOr<RecipeConfig> r = ResolveRecipe(recipe);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(r.status().message()),
              AllOf(HasSubstr("recipe.policy.include[0]"), HasSubstr("40000 bytes"),
                    HasSubstr("at most 1024")));
  // Within the size limit, deep nesting is fine: RE2 does not recurse per level.
  fp8d::v1::Recipe nested;
  nested.set_name("delayed");
  nested.mutable_policy()->add_exclude(std::string(500, '(') + "lm_head" + std::string(500, ')'));
  EXPECT_TRUE(ResolveRecipe(nested).ok()) << ResolveRecipe(nested).status();
}

TEST(RecipeConfigTest, TooManyRegexesAreRefused) {
  fp8d::v1::Recipe recipe;
  recipe.set_name("current");
  for (int i = 0; i <= kMaxPolicyRegexes; ++i) recipe.mutable_policy()->add_exclude("x");
  EXPECT_THAT(std::string(ResolveRecipe(recipe).status().message()),
              AllOf(HasSubstr("recipe.policy.exclude"), HasSubstr("at most 64")));
}

}  // namespace
}  // namespace fp8d
