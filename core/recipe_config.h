// A validated FP8 recipe with defaults filled in, and the mapping to and from proto.
#pragma once

#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "fp8d/v1/recipe.pb.h"

namespace fp8d {

enum class RecipeKind { kBf16, kDelayed, kCurrent, kRowwise, kBlockwise, kMxfp8 };
enum class Fp8Format { kE4M3, kE5M2 };
enum class RecipeFormat { kHybrid, kE4M3 };  // HYBRID: E4M3 forward, E5M2 gradients
enum class AmaxAlgo { kMax, kMostRecent };
enum class WeightBlock { k1x128, k128x128 };

struct LayerPolicyConfig {
  bool skip_lm_head = true;
  bool skip_attention_qk = false;
  int min_gemm_dim = 0;                // 0 = engine's measured automatic threshold
  std::vector<std::string> include;    // RE2 regex (core/user_regex.h), whole-name match
  std::vector<std::string> exclude;
  int bf16_warmup_steps = 0;
  bool fp32_weight_grads = true;
  bool fast_accum_forward = true;
  bool cache_fp8_weights = true;
};

struct RecipeConfig {
  RecipeKind kind = RecipeKind::kBf16;
  RecipeFormat format = RecipeFormat::kHybrid;
  int amax_history_len = 16;
  AmaxAlgo amax_algo = AmaxAlgo::kMax;
  int margin = 0;
  WeightBlock weight_block = WeightBlock::k1x128;
  LayerPolicyConfig policy;

  bool is_fp8() const { return kind != RecipeKind::kBf16; }
  Fp8Format forward_format() const { return Fp8Format::kE4M3; }
  Fp8Format grad_format() const {
    return format == RecipeFormat::kHybrid ? Fp8Format::kE5M2 : Fp8Format::kE4M3;
  }
};

constexpr int kMaxAmaxHistoryLen = 1024;
constexpr int kMaxMargin = 32;
constexpr int kMaxPolicyRegexes = 64;  // per list (include, exclude)

std::string_view RecipeKindName(RecipeKind kind);   // "bf16", "delayed", ...
std::string_view Fp8FormatName(Fp8Format format);   // "e4m3", "e5m2"

// Validates and fills defaults. Unknown names and out-of-range values are INVALID_ARGUMENT
// naming the field (`recipe.amax_compute_algo`) and the allowed values. Hardware support
// (mxfp8 on Hopper) is the engine's to check, not this function's.
absl::StatusOr<RecipeConfig> ResolveRecipe(const fp8d::v1::Recipe& proto);

// Every field set explicitly, so a stored recipe reads the same under later defaults.
fp8d::v1::Recipe ToProto(const RecipeConfig& recipe);

}  // namespace fp8d
