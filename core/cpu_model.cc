#include "core/cpu_model.h"

#include <algorithm>

#include "absl/base/internal/raw_logging.h"
#include "absl/strings/str_cat.h"
#include "core/model_weights.h"
#include "core/ref/attention.h"
#include "core/ref/cross_entropy.h"
#include "core/ref/embedding.h"
#include "core/ref/linear.h"
#include "core/ref/rmsnorm.h"
#include "core/ref/rope.h"
#include "core/ref/swiglu.h"

namespace fp8d {
namespace {

const float* Weight(const TensorMap& weights, const std::string& name) {
  auto it = weights.find(name);
  ABSL_RAW_CHECK(it != weights.end(), "model weight missing");
  return it->second.data.data();
}

float* Grad(TensorMap* grads, const std::string& name) {
  auto it = grads->find(name);
  ABSL_RAW_CHECK(it != grads->end(), "model gradient missing");
  return it->second.data.data();
}

// Gemm layer indices within GemmLayerNames: four per decoder layer, then the LM head.
constexpr int kQkv = 0, kOut = 1, kGateUp = 2, kDown = 3, kGemmsPerLayer = 4;

int64_t Bytes(const std::vector<float>& v) { return static_cast<int64_t>(v.size()) * 4; }

}  // namespace

CpuModel::CpuModel(const ModelConfig& config) : config_(config), layers_(config.n_layer) {}

void CpuModel::Resize(int batch, int seq_len) {
  if (batch == batch_ && seq_len == seq_len_) return;
  batch_ = batch;
  seq_len_ = seq_len;
  const size_t n = static_cast<size_t>(batch) * seq_len;
  const ModelConfig& c = config_;
  const size_t d = c.d_model, qkv = c.qkv_dim(), ff = c.d_ff;
  for (LayerActs& a : layers_) {
    a.res_in.resize(n * d);
    a.ln1.resize(n * d);
    a.rstd1.resize(n);
    a.qkv.resize(n * qkv);
    a.att.resize(n * d);
    a.lse.resize(n * c.n_head);
    a.res_mid.resize(n * d);
    a.ln2.resize(n * d);
    a.rstd2.resize(n);
    a.gate_up.resize(n * 2 * ff);
    a.h.resize(n * ff);
  }
  res_out_.resize(n * d);
  lnf_.resize(n * d);
  rstdf_.resize(n);
  logits_.resize(n * c.vocab_size);
  for (auto* v : {&proj_, &dres_, &dtmp_, &dln_, &datt_}) v->resize(n * d);
  dqkv_.resize(n * qkv);
  dh_.resize(n * ff);
  dgate_up_.resize(n * 2 * ff);
}

int64_t CpuModel::ActivationBytes() const {
  int64_t total = 0;
  for (const LayerActs& a : layers_) {
    for (const auto* v : {&a.res_in, &a.ln1, &a.rstd1, &a.qkv, &a.att, &a.lse, &a.res_mid, &a.ln2,
                          &a.rstd2, &a.gate_up, &a.h})
      total += Bytes(*v);
  }
  for (const auto* v : {&res_out_, &lnf_, &rstdf_, &logits_, &proj_, &dres_, &dtmp_, &dln_, &datt_,
                        &dqkv_, &dh_, &dgate_up_})
    total += Bytes(*v);
  return total;
}

void CpuModel::Linear(absl::Span<const GemmQuant> gemms, int layer, const float* x, const float* w,
                      float* y, int m, int k, int n) {
  if (!gemms.empty() && gemms[layer].fp8) {
    ref::Fp8LinearForward(x, w, y, m, k, n, gemms[layer].quant, gemms[layer].stats);
  } else {
    ref::LinearForward(x, w, y, m, k, n);
  }
}

void CpuModel::LinearBackward(absl::Span<const GemmQuant> gemms, int layer, const float* dy,
                              const float* x, const float* w, float* dx, float* dw, int m, int k,
                              int n) {
  if (!gemms.empty() && gemms[layer].fp8) {
    ref::Fp8LinearBackward(dy, x, w, dx, dw, m, k, n, gemms[layer].quant, gemms[layer].stats);
  } else {
    ref::LinearBackwardInput(dy, w, dx, m, k, n);
    ref::LinearBackwardWeight(dy, x, dw, m, k, n);
  }
}

float CpuModel::ForwardBackward(const TensorMap& weights, const TokenBatch& batch,
                                absl::Span<const GemmQuant> gemms, float dloss, TensorMap* grads) {
  const ModelConfig& c = config_;
  ABSL_RAW_CHECK(gemms.empty() || gemms.size() == GemmLayerNames(c).size(),
                 "one GemmQuant per GEMM layer");
  ABSL_RAW_CHECK(c.n_layer >= 1, "the model has at least one layer");
  Resize(batch.batch, batch.seq_len);
  const int N = batch.batch * batch.seq_len;
  const int d = c.d_model, qkv = c.qkv_dim(), ff = c.d_ff, V = c.vocab_size, L = c.n_layer;
  const int hd = c.head_dim();
  const ref::AttentionShape shape{batch.batch, batch.seq_len, c.n_head, c.n_kv_head, hd, qkv};
  const std::string embed_name = "model.embed_tokens.weight";
  const std::string lm_head_name = GemmLayerWeight(c, "lm_head");
  auto layer_prefix = [](int l) { return absl::StrCat("model.layers.", l, "."); };

  ref::EmbeddingForward(batch.inputs.data(), Weight(weights, embed_name), layers_[0].res_in.data(),
                        N, d);
  for (int l = 0; l < L; ++l) {
    LayerActs& a = layers_[l];
    const std::string p = layer_prefix(l);
    const int g = l * kGemmsPerLayer;
    ref::RmsNormForward(a.res_in.data(), Weight(weights, p + "input_layernorm.weight"),
                        a.ln1.data(), a.rstd1.data(), N, d, c.norm_eps);
    Linear(gemms, g + kQkv, a.ln1.data(), Weight(weights, p + "self_attn.qkv_proj.weight"),
           a.qkv.data(), N, d, qkv);
    ref::RopeForward(a.qkv.data(), batch.batch, batch.seq_len, c.n_head, hd, qkv, c.rope_theta);
    ref::RopeForward(a.qkv.data() + d, batch.batch, batch.seq_len, c.n_kv_head, hd, qkv,
                     c.rope_theta);
    ref::AttentionForward(a.qkv.data(), a.qkv.data() + d, a.qkv.data() + d + c.kv_dim(),
                          a.att.data(), a.lse.data(), shape);
    Linear(gemms, g + kOut, a.att.data(), Weight(weights, p + "self_attn.o_proj.weight"),
           proj_.data(), N, d, d);
    for (size_t i = 0; i < a.res_mid.size(); ++i) a.res_mid[i] = a.res_in[i] + proj_[i];
    ref::RmsNormForward(a.res_mid.data(), Weight(weights, p + "post_attention_layernorm.weight"),
                        a.ln2.data(), a.rstd2.data(), N, d, c.norm_eps);
    Linear(gemms, g + kGateUp, a.ln2.data(), Weight(weights, p + "mlp.gate_up_proj.weight"),
           a.gate_up.data(), N, d, 2 * ff);
    ref::SwiGluForward(a.gate_up.data(), a.h.data(), N, ff);
    Linear(gemms, g + kDown, a.h.data(), Weight(weights, p + "mlp.down_proj.weight"), proj_.data(),
           N, ff, d);
    float* next = l + 1 < L ? layers_[l + 1].res_in.data() : res_out_.data();
    for (size_t i = 0; i < a.res_mid.size(); ++i) next[i] = a.res_mid[i] + proj_[i];
  }
  ref::RmsNormForward(res_out_.data(), Weight(weights, "model.norm.weight"), lnf_.data(),
                      rstdf_.data(), N, d, c.norm_eps);
  const int lm_head = L * kGemmsPerLayer;
  Linear(gemms, lm_head, lnf_.data(), Weight(weights, lm_head_name), logits_.data(), N, d, V);
  float* dlogits = grads != nullptr ? logits_.data() : nullptr;  // gradient written in place
  const float loss =
      ref::CrossEntropyForwardBackward(logits_.data(), batch.targets.data(), dlogits, N, V, dloss);
  if (grads == nullptr) return loss;

  LinearBackward(gemms, lm_head, logits_.data(), lnf_.data(), Weight(weights, lm_head_name),
                 dln_.data(), Grad(grads, lm_head_name), N, d, V);
  ref::RmsNormBackward(dln_.data(), res_out_.data(), Weight(weights, "model.norm.weight"),
                       rstdf_.data(), dres_.data(), Grad(grads, "model.norm.weight"), N, d);
  // dres_ holds the gradient of the residual stream entering the layer below.
  for (int l = L - 1; l >= 0; --l) {
    LayerActs& a = layers_[l];
    const std::string p = layer_prefix(l);
    const int g = l * kGemmsPerLayer;
    LinearBackward(gemms, g + kDown, dres_.data(), a.h.data(),
                   Weight(weights, p + "mlp.down_proj.weight"), dh_.data(),
                   Grad(grads, p + "mlp.down_proj.weight"), N, ff, d);
    ref::SwiGluBackward(dh_.data(), a.gate_up.data(), dgate_up_.data(), N, ff);
    LinearBackward(gemms, g + kGateUp, dgate_up_.data(), a.ln2.data(),
                   Weight(weights, p + "mlp.gate_up_proj.weight"), dln_.data(),
                   Grad(grads, p + "mlp.gate_up_proj.weight"), N, d, 2 * ff);
    ref::RmsNormBackward(dln_.data(), a.res_mid.data(),
                         Weight(weights, p + "post_attention_layernorm.weight"), a.rstd2.data(),
                         dtmp_.data(), Grad(grads, p + "post_attention_layernorm.weight"), N, d);
    for (size_t i = 0; i < dres_.size(); ++i) dres_[i] += dtmp_[i];

    LinearBackward(gemms, g + kOut, dres_.data(), a.att.data(),
                   Weight(weights, p + "self_attn.o_proj.weight"), datt_.data(),
                   Grad(grads, p + "self_attn.o_proj.weight"), N, d, d);
    float* dq = dqkv_.data();
    ref::AttentionBackward(datt_.data(), a.qkv.data(), a.qkv.data() + d,
                           a.qkv.data() + d + c.kv_dim(), a.att.data(), a.lse.data(), dq, dq + d,
                           dq + d + c.kv_dim(), shape);
    ref::RopeBackward(dq, batch.batch, batch.seq_len, c.n_head, hd, qkv, c.rope_theta);
    ref::RopeBackward(dq + d, batch.batch, batch.seq_len, c.n_kv_head, hd, qkv, c.rope_theta);
    LinearBackward(gemms, g + kQkv, dqkv_.data(), a.ln1.data(),
                   Weight(weights, p + "self_attn.qkv_proj.weight"), dln_.data(),
                   Grad(grads, p + "self_attn.qkv_proj.weight"), N, d, qkv);
    ref::RmsNormBackward(dln_.data(), a.res_in.data(),
                         Weight(weights, p + "input_layernorm.weight"), a.rstd1.data(),
                         dtmp_.data(), Grad(grads, p + "input_layernorm.weight"), N, d);
    for (size_t i = 0; i < dres_.size(); ++i) dres_[i] += dtmp_[i];
  }
  ref::EmbeddingBackward(batch.inputs.data(), dres_.data(), Grad(grads, embed_name), N, d);
  return loss;
}

}  // namespace fp8d
