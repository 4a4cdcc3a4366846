#include "core/recipe_config.h"

#include <string>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/string_view.h"
#include "core/user_regex.h"

namespace fp8d {
namespace {

// Lower-case names used in job files and the API, in enum order.
constexpr const char* kRecipeNames[] = {"bf16",    "delayed",   "current",
                                        "rowwise", "blockwise", "mxfp8"};
constexpr const char* kRecipeFormatNames[] = {"hybrid", "e4m3"};
constexpr const char* kAmaxAlgoNames[] = {"max", "most_recent"};
constexpr const char* kWeightBlockNames[] = {"1x128", "128x128"};

template <typename Enum, size_t N>
const char* NameOf(Enum value, const char* const (&names)[N]) {
  return names[static_cast<size_t>(value)];
}

// Finds `name` in `names`; false when absent.
template <typename Enum, size_t N>
bool Lookup(const std::string& name, const char* const (&names)[N], Enum* out) {
  for (size_t i = 0; i < N; ++i) {
    if (names[i] == name) {
      *out = static_cast<Enum>(i);
      return true;
    }
  }
  return false;
}

template <size_t N>
std::string Allowed(const char* const (&names)[N]) {
  return absl::StrJoin(names, ", ");
}

absl::Status UnknownName(absl::string_view field, absl::string_view value,
                         absl::string_view allowed) {
  return absl::InvalidArgumentError(
      absl::StrCat("recipe.", field, " = \"", value, "\" is unknown: allowed ", allowed));
}

absl::Status OutOfRange(absl::string_view field, int64_t value, absl::string_view allowed) {
  return absl::InvalidArgumentError(
      absl::StrCat("recipe.", field, " = ", value, " is out of range: allowed ", allowed));
}

// An option given to a recipe that has no use for it is an error rather than silently
// ignored, so a job file never looks like it configures something it does not.
absl::Status NotApplicable(absl::string_view field, absl::string_view value, RecipeKind kind,
                           absl::string_view applies_to) {
  return absl::InvalidArgumentError(
      absl::StrCat("recipe.", field, " = ", value, " does not apply to recipe \"",
                   NameOf(kind, kRecipeNames), "\": allowed only with ", applies_to));
}

std::string Quoted(absl::string_view s) { return absl::StrCat("\"", s, "\""); }

// Every policy regex compiles with RE2 within its limits (core/user_regex.h), and there are at
// most kMaxPolicyRegexes of each kind, so matching layer names stays cheap at every step.
absl::Status CheckRegexes(const google::protobuf::RepeatedPtrField<std::string>& patterns,
                          absl::string_view field) {
  if (patterns.size() > kMaxPolicyRegexes) {
    return absl::InvalidArgumentError(absl::StrCat("recipe.policy.", field, " has ",
                                                   patterns.size(), " regexes: allowed at most ",
                                                   kMaxPolicyRegexes));
  }
  for (int i = 0; i < patterns.size(); ++i) {
    auto re = CompileUserRegex(patterns[i], absl::StrCat("recipe.policy.", field, "[", i, "]"));
    if (!re.ok()) return re.status();
  }
  return absl::OkStatus();
}

absl::StatusOr<LayerPolicyConfig> ResolvePolicy(const fp8d::v1::LayerPolicy& p) {
  LayerPolicyConfig c;
  if (p.has_skip_lm_head()) c.skip_lm_head = p.skip_lm_head();
  if (p.has_skip_attention_qk()) c.skip_attention_qk = p.skip_attention_qk();
  if (p.has_min_gemm_dim()) c.min_gemm_dim = p.min_gemm_dim();
  if (p.has_bf16_warmup_steps()) c.bf16_warmup_steps = p.bf16_warmup_steps();
  if (p.has_fp32_weight_grads()) c.fp32_weight_grads = p.fp32_weight_grads();
  if (p.has_fast_accum_forward()) c.fast_accum_forward = p.fast_accum_forward();
  if (p.has_cache_fp8_weights()) c.cache_fp8_weights = p.cache_fp8_weights();
  if (c.min_gemm_dim < 0) {
    return OutOfRange("policy.min_gemm_dim", c.min_gemm_dim, ">= 0 (0 = automatic threshold)");
  }
  if (c.bf16_warmup_steps < 0)
    return OutOfRange("policy.bf16_warmup_steps", c.bf16_warmup_steps, ">= 0");
  // Refused rather than ignored: neither engine has a BF16 weight-gradient buffer.
  if (!c.fp32_weight_grads) {
    return absl::InvalidArgumentError(
        "recipe.policy.fp32_weight_grads = false is not supported: both engines accumulate "
        "weight gradients in FP32; allowed: true (the default)");
  }
  if (absl::Status s = CheckRegexes(p.include(), "include"); !s.ok()) return s;
  if (absl::Status s = CheckRegexes(p.exclude(), "exclude"); !s.ok()) return s;
  c.include.assign(p.include().begin(), p.include().end());
  c.exclude.assign(p.exclude().begin(), p.exclude().end());
  return c;
}

bool HasAmaxHistory(RecipeKind k) { return k == RecipeKind::kDelayed; }
bool HasMargin(RecipeKind k) { return k == RecipeKind::kDelayed || k == RecipeKind::kCurrent; }
bool HasWeightBlock(RecipeKind k) { return k == RecipeKind::kBlockwise; }
// Per-row and per-block scales come from cuBLASLt modes that take E4M3 operands only.
bool NeedsE4M3(RecipeKind k) { return k == RecipeKind::kRowwise || k == RecipeKind::kBlockwise; }

}  // namespace

std::string_view RecipeKindName(RecipeKind kind) { return NameOf(kind, kRecipeNames); }

std::string_view Fp8FormatName(Fp8Format format) {
  return format == Fp8Format::kE4M3 ? "e4m3" : "e5m2";
}

absl::StatusOr<RecipeConfig> ResolveRecipe(const fp8d::v1::Recipe& proto) {
  RecipeConfig r;
  if (!proto.name().empty() && !Lookup(proto.name(), kRecipeNames, &r.kind)) {
    return UnknownName("name", proto.name(), Allowed(kRecipeNames));
  }
  const RecipeKind kind = r.kind;

  if (!r.is_fp8()) {
    if (!proto.format().empty()) {
      return NotApplicable("format", Quoted(proto.format()), kind,
                           "FP8 recipes (delayed, current, rowwise, blockwise, mxfp8)");
    }
  } else if (proto.format().empty()) {
    r.format = (NeedsE4M3(kind) || kind == RecipeKind::kMxfp8) ? RecipeFormat::kE4M3
                                                               : RecipeFormat::kHybrid;
  } else {
    if (!Lookup(proto.format(), kRecipeFormatNames, &r.format)) {
      return UnknownName("format", proto.format(), Allowed(kRecipeFormatNames));
    }
    if (NeedsE4M3(kind) && r.format != RecipeFormat::kE4M3) {
      return absl::InvalidArgumentError(
          absl::StrCat("recipe.format = \"", proto.format(), "\" is not supported by recipe \"",
                       NameOf(kind, kRecipeNames),
                       "\": allowed e4m3 (per-row and per-block scaled GEMMs take E4M3 "
                       "operands only)"));
    }
  }

  if (proto.has_amax_history_len()) {
    if (!HasAmaxHistory(kind)) {
      return NotApplicable("amax_history_len", absl::StrCat(proto.amax_history_len()), kind,
                           "delayed");
    }
    r.amax_history_len = proto.amax_history_len();
    if (r.amax_history_len < 1 || r.amax_history_len > kMaxAmaxHistoryLen) {
      return OutOfRange("amax_history_len", r.amax_history_len,
                        absl::StrCat("1..", kMaxAmaxHistoryLen));
    }
  }
  if (!proto.amax_compute_algo().empty()) {
    if (!HasAmaxHistory(kind)) {
      return NotApplicable("amax_compute_algo", Quoted(proto.amax_compute_algo()), kind, "delayed");
    }
    if (!Lookup(proto.amax_compute_algo(), kAmaxAlgoNames, &r.amax_algo)) {
      return UnknownName("amax_compute_algo", proto.amax_compute_algo(), Allowed(kAmaxAlgoNames));
    }
  }
  if (proto.has_margin()) {
    if (!HasMargin(kind)) {
      return NotApplicable("margin", absl::StrCat(proto.margin()), kind, "delayed, current");
    }
    r.margin = proto.margin();
    if (r.margin < 0 || r.margin > kMaxMargin) {
      return OutOfRange("margin", r.margin, absl::StrCat("0..", kMaxMargin));
    }
  }
  if (!proto.weight_block().empty()) {
    if (!HasWeightBlock(kind)) {
      return NotApplicable("weight_block", Quoted(proto.weight_block()), kind, "blockwise");
    }
    if (!Lookup(proto.weight_block(), kWeightBlockNames, &r.weight_block)) {
      return UnknownName("weight_block", proto.weight_block(), Allowed(kWeightBlockNames));
    }
  }

  // The policy is validated under bf16 too: it is ignored there, but a broken regex is still
  // a mistake in the job file worth reporting.
  absl::StatusOr<LayerPolicyConfig> policy = ResolvePolicy(proto.policy());
  if (!policy.ok()) return policy.status();
  r.policy = *std::move(policy);
  return r;
}

fp8d::v1::Recipe ToProto(const RecipeConfig& r) {
  fp8d::v1::Recipe p;
  p.set_name(NameOf(r.kind, kRecipeNames));
  // Options a recipe does not use stay unset, since ResolveRecipe rejects them there.
  if (r.is_fp8()) p.set_format(NameOf(r.format, kRecipeFormatNames));
  if (HasAmaxHistory(r.kind)) {
    p.set_amax_history_len(r.amax_history_len);
    p.set_amax_compute_algo(NameOf(r.amax_algo, kAmaxAlgoNames));
  }
  if (HasMargin(r.kind)) p.set_margin(r.margin);
  if (HasWeightBlock(r.kind)) p.set_weight_block(NameOf(r.weight_block, kWeightBlockNames));

  fp8d::v1::LayerPolicy* policy = p.mutable_policy();
  policy->set_skip_lm_head(r.policy.skip_lm_head);
  policy->set_skip_attention_qk(r.policy.skip_attention_qk);
  policy->set_min_gemm_dim(r.policy.min_gemm_dim);
  for (const std::string& re : r.policy.include) policy->add_include(re);
  for (const std::string& re : r.policy.exclude) policy->add_exclude(re);
  policy->set_bf16_warmup_steps(r.policy.bf16_warmup_steps);
  policy->set_fp32_weight_grads(r.policy.fp32_weight_grads);
  policy->set_fast_accum_forward(r.policy.fast_accum_forward);
  policy->set_cache_fp8_weights(r.policy.cache_fp8_weights);
  return p;
}

}  // namespace fp8d
