#include "core/model_weights.h"

#include <algorithm>
#include <atomic>
#include <cmath>
#include <thread>

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

namespace {

// SplitMix64 advances its state by this constant per draw (see core/rng.h).
constexpr uint64_t kGolden = 0x9E3779B97F4A7C15ull;
// Values filled by one task: small enough to balance threads, large enough to amortise them.
constexpr int64_t kChunk = int64_t{1} << 18;

struct Chunk {
  float* data;
  int64_t count;
  double std;
  uint64_t first;  // index of data[0] in the stream of normals over all matrices
};

}  // namespace

// The weights are one stream of Rng::NextNormal values over the matrices in ParamSpecs order.
// Each normal takes two draws except when its first uniform is exactly 0 (probability 2^-53),
// so value i starts at draw 2i and chunks of the stream can be filled in parallel from
// independently positioned generators. A chunk that meets the rare extra draw ends at the wrong
// state; then the whole stream is redone in order, so the result never depends on the number of
// threads or the machine.
TensorMap InitWeights(const ModelConfig& c, uint64_t seed) {
  TensorMap out;
  const uint64_t start = seed ^ 0x5EEDF00DC0FFEEull;
  const double out_proj_std = c.init_std / std::sqrt(2.0 * c.n_layer);
  std::vector<Chunk> chunks;
  uint64_t next_value = 0;
  for (const ParamSpec& spec : ParamSpecs(c)) {
    HostTensor t;
    t.shape = spec.shape;
    t.data.resize(t.numel());
    // Map nodes never move, so the chunks below may point into them.
    std::vector<float>& data = out.emplace(spec.name, std::move(t)).first->second.data;
    if (spec.is_norm) {
      std::fill(data.begin(), data.end(), 1.f);
      continue;
    }
    const bool out_proj = absl::EndsWith(spec.name, "o_proj.weight") ||
                          absl::EndsWith(spec.name, "down_proj.weight");
    const double std = out_proj ? out_proj_std : c.init_std;
    const int64_t n = static_cast<int64_t>(data.size());
    for (int64_t off = 0; off < n; off += kChunk) {
      chunks.push_back({data.data() + off, std::min(kChunk, n - off), std, next_value + off});
    }
    next_value += n;
  }

  std::atomic<size_t> next_chunk{0};
  std::atomic<bool> misaligned{false};
  auto work = [&] {
    for (size_t i = next_chunk++; i < chunks.size(); i = next_chunk++) {
      const Chunk& ch = chunks[i];
      Rng rng(start + 2 * ch.first * kGolden);
      for (int64_t j = 0; j < ch.count; ++j) {
        ch.data[j] = static_cast<float>(rng.NextNormal() * ch.std);
      }
      if (rng.state() != start + 2 * (ch.first + ch.count) * kGolden) misaligned = true;
    }
  };
  const unsigned threads = static_cast<unsigned>(
      std::min<size_t>(std::max(1u, std::thread::hardware_concurrency()), chunks.size()));
  std::vector<std::thread> pool;
  for (unsigned i = 1; i < threads; ++i) pool.emplace_back(work);
  work();
  for (std::thread& t : pool) t.join();

  if (misaligned) {
    Rng rng(start);
    for (const Chunk& ch : chunks) {
      for (int64_t j = 0; j < ch.count; ++j) {
        ch.data[j] = static_cast<float>(rng.NextNormal() * ch.std);
      }
    }
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
