#include "core/model_config.h"

#include <cmath>

#include "absl/strings/str_cat.h"

namespace fp8d {
namespace {

struct Preset {
  const char* name;
  int n_layer, d_model, n_head, n_kv_head, d_ff, vocab_size, max_seq_len;
  bool tie_embeddings;
};

// tiny is sized for CPU tests; the others follow GPT-2/Llama-3.2 sizes with a GPT-2 vocabulary
// padded to a multiple of 128 (50304).
constexpr Preset kPresets[] = {
    {"tiny", 2, 64, 4, 2, 192, 256, 256, true},
    {"124m", 12, 768, 12, 12, 2048, 50304, 1024, true},
    {"350m", 24, 1024, 16, 16, 2816, 50304, 1024, true},
    {"1b", 16, 2048, 32, 8, 8192, 50304, 2048, true},
    {"3b", 28, 3072, 24, 8, 8192, 50304, 2048, true},
};

absl::Status RangeError(const char* field, int64_t value, const std::string& allowed) {
  return absl::InvalidArgumentError(
      absl::StrCat("model.", field, " = ", value, " is out of range: allowed ", allowed));
}

}  // namespace

std::string PresetNames() {
  std::string out;
  for (const Preset& p : kPresets) absl::StrAppend(&out, out.empty() ? "" : ", ", p.name);
  return out;
}

int64_t ModelConfig::MatmulParamCount() const {
  const int64_t d = d_model;
  const int64_t per_layer = d * qkv_dim() + d * d + 3 * d * d_ff;
  return n_layer * per_layer + int64_t{vocab_size} * d;
}

int64_t ModelConfig::ParamCount() const {
  const int64_t d = d_model;
  const int64_t per_layer = d * qkv_dim() + d * d + 3 * d * d_ff + 2 * d;
  const int64_t embed = int64_t{vocab_size} * d;
  return n_layer * per_layer + d + embed + (tie_embeddings ? 0 : embed);
}

double ModelConfig::TrainFlopsPerToken(int seq_len) const {
  // 6N for the matmul parameters, plus attention scores and weighted values:
  // forward QK^T and PV are 2 * 2 * T * d_model FLOPs per token per layer (full square),
  // backward twice that, so 12 * L * T * d_model; causal masking halves the useful work.
  const double attn = 12.0 * n_layer * seq_len * d_model * 0.5;
  return 6.0 * static_cast<double>(MatmulParamCount()) + attn;
}

absl::StatusOr<ModelConfig> ResolveModelConfig(const fp8d::v1::ModelConfig& proto) {
  ModelConfig c;
  if (!proto.preset().empty()) {
    const Preset* found = nullptr;
    for (const Preset& p : kPresets)
      if (proto.preset() == p.name) found = &p;
    if (found == nullptr) {
      return absl::InvalidArgumentError(absl::StrCat("model.preset = \"", proto.preset(),
                                                     "\" is unknown: allowed ", PresetNames()));
    }
    c.preset = found->name;
    c.n_layer = found->n_layer;
    c.d_model = found->d_model;
    c.n_head = found->n_head;
    c.n_kv_head = found->n_kv_head;
    c.d_ff = found->d_ff;
    c.vocab_size = found->vocab_size;
    c.max_seq_len = found->max_seq_len;
    c.tie_embeddings = found->tie_embeddings;
  } else {
    for (const auto& [has, name] : {std::pair{proto.has_n_layer(), "n_layer"},
                                    std::pair{proto.has_d_model(), "d_model"},
                                    std::pair{proto.has_n_head(), "n_head"},
                                    std::pair{proto.has_d_ff(), "d_ff"},
                                    std::pair{proto.has_vocab_size(), "vocab_size"}}) {
      if (!has) {
        return absl::InvalidArgumentError(absl::StrCat(
            "model.", name, " is required when model.preset is not set (presets: ", PresetNames(),
            ")"));
      }
    }
    c.max_seq_len = 1024;
  }
  if (proto.has_n_layer()) c.n_layer = proto.n_layer();
  if (proto.has_d_model()) c.d_model = proto.d_model();
  if (proto.has_n_head()) c.n_head = proto.n_head();
  if (proto.has_n_kv_head()) c.n_kv_head = proto.n_kv_head();
  else if (proto.preset().empty()) c.n_kv_head = c.n_head;
  if (proto.has_d_ff()) c.d_ff = proto.d_ff();
  if (proto.has_vocab_size()) c.vocab_size = proto.vocab_size();
  if (proto.has_max_seq_len()) c.max_seq_len = proto.max_seq_len();
  if (proto.has_tie_embeddings()) c.tie_embeddings = proto.tie_embeddings();
  if (proto.has_rope_theta()) c.rope_theta = proto.rope_theta();
  if (proto.has_norm_eps()) c.norm_eps = proto.norm_eps();
  if (proto.has_init_std()) c.init_std = proto.init_std();

  if (c.n_layer < 1 || c.n_layer > 256) return RangeError("n_layer", c.n_layer, "1..256");
  if (c.d_model < 8 || c.d_model > 65536) return RangeError("d_model", c.d_model, "8..65536");
  if (c.n_head < 1 || c.d_model % c.n_head != 0)
    return RangeError("n_head", c.n_head, absl::StrCat("a divisor of d_model (", c.d_model, ")"));
  if (c.head_dim() % 2 != 0)
    return RangeError("n_head", c.n_head, "a value giving an even head_dim (RoPE rotates pairs)");
  if (c.n_kv_head < 1 || c.n_head % c.n_kv_head != 0)
    return RangeError("n_kv_head", c.n_kv_head,
                      absl::StrCat("a divisor of n_head (", c.n_head, ")"));
  if (c.d_ff < 1 || c.d_ff > 1 << 20) return RangeError("d_ff", c.d_ff, "1..1048576");
  if (c.vocab_size < 2 || c.vocab_size > 1 << 24)
    return RangeError("vocab_size", c.vocab_size, "2..16777216");
  if (c.max_seq_len < 2 || c.max_seq_len > 1 << 20)
    return RangeError("max_seq_len", c.max_seq_len, "2..1048576");
  if (!(c.rope_theta > 0.f) || !std::isfinite(c.rope_theta))
    return absl::InvalidArgumentError("model.rope_theta must be a finite value > 0");
  if (!(c.norm_eps > 0.f) || c.norm_eps > 1.f)
    return absl::InvalidArgumentError("model.norm_eps must be in (0, 1]");
  if (!(c.init_std > 0.f) || c.init_std > 1.f)
    return absl::InvalidArgumentError("model.init_std must be in (0, 1]");
  return c;
}

fp8d::v1::ModelConfig ToProto(const ModelConfig& c) {
  fp8d::v1::ModelConfig p;
  p.set_preset(c.preset);
  p.set_n_layer(c.n_layer);
  p.set_d_model(c.d_model);
  p.set_n_head(c.n_head);
  p.set_n_kv_head(c.n_kv_head);
  p.set_d_ff(c.d_ff);
  p.set_vocab_size(c.vocab_size);
  p.set_max_seq_len(c.max_seq_len);
  p.set_tie_embeddings(c.tie_embeddings);
  p.set_rope_theta(c.rope_theta);
  p.set_norm_eps(c.norm_eps);
  p.set_init_std(c.init_std);
  return p;
}

}  // namespace fp8d
