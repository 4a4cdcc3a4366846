#include "core/model_weights.h"

#include <cmath>

#include "absl/strings/str_cat.h"
#include "absl/strings/match.h"
#include "core/rng.h"

namespace fp8d {

std::vector<ParamSpec> ParamSpecs(const ModelConfig& c) {
  const int64_t d = c.d_model;
  std::vector<ParamSpec> specs;
  specs.push_back({"model.embed_tokens.weight", {c.vocab_size, d}});
  for (int i = 0; i < c.n_layer; ++i) {
    const std::string p = absl::StrCat("model.layers.", i, ".");
    specs.push_back({p + "input_layernorm.weight", {d}, true});
    specs.push_back({p + "self_attn.qkv_proj.weight", {c.qkv_dim(), d}});
    specs.push_back({p + "self_attn.o_proj.weight", {d, d}});
    specs.push_back({p + "post_attention_layernorm.weight", {d}, true});
    specs.push_back({p + "mlp.gate_up_proj.weight", {2 * int64_t{c.d_ff}, d}});
    specs.push_back({p + "mlp.down_proj.weight", {d, c.d_ff}});
  }
  specs.push_back({"model.norm.weight", {d}, true});
  if (!c.tie_embeddings) specs.push_back({"lm_head.weight", {c.vocab_size, d}});
  return specs;
}

TensorMap InitWeights(const ModelConfig& c, uint64_t seed) {
  TensorMap out;
  Rng rng(seed ^ 0x5EEDF00DC0FFEEull);
  const double out_proj_std = c.init_std / std::sqrt(2.0 * c.n_layer);
  for (const ParamSpec& spec : ParamSpecs(c)) {
    HostTensor t;
    t.shape = spec.shape;
    t.data.resize(t.numel());
    if (spec.is_norm) {
      std::fill(t.data.begin(), t.data.end(), 1.f);
    } else {
      const bool out_proj = absl::EndsWith(spec.name, "o_proj.weight") ||
                            absl::EndsWith(spec.name, "down_proj.weight");
      const double std = out_proj ? out_proj_std : c.init_std;
      for (float& v : t.data) v = static_cast<float>(rng.NextNormal() * std);
    }
    out.emplace(spec.name, std::move(t));
  }
  return out;
}

std::vector<std::string> GemmLayerNames(const ModelConfig& c) {
  std::vector<std::string> names;
  for (int i = 0; i < c.n_layer; ++i) {
    const std::string p = absl::StrCat("layers.", i, ".");
    names.push_back(p + "attn.qkv");
    names.push_back(p + "attn.out");
    names.push_back(p + "mlp.gate_up");
    names.push_back(p + "mlp.down");
  }
  names.push_back("lm_head");
  return names;
}

std::string GemmLayerWeight(const ModelConfig& c, const std::string& layer) {
  if (layer == "lm_head") return c.tie_embeddings ? "model.embed_tokens.weight" : "lm_head.weight";
  // layers.{i}.{attn|mlp}.{kind}
  const size_t dot1 = layer.find('.');
  const size_t dot2 = layer.find('.', dot1 + 1);
  const std::string idx = layer.substr(dot1 + 1, dot2 - dot1 - 1);
  const std::string rest = layer.substr(dot2 + 1);
  const std::string p = absl::StrCat("model.layers.", idx, ".");
  if (rest == "attn.qkv") return p + "self_attn.qkv_proj.weight";
  if (rest == "attn.out") return p + "self_attn.o_proj.weight";
  if (rest == "mlp.gate_up") return p + "mlp.gate_up_proj.weight";
  if (rest == "mlp.down") return p + "mlp.down_proj.weight";
  return "";
}

}  // namespace fp8d
