// The CUDA engine's Linear layers: y = x W^T with W [out, in] (the BF16 copy, or an Fp8Linear's
// cached FP8 copies); backward dx = dy W, dW += dy^T x (FP32). Two layers have a shape of their
// own under FP8:
//  - attn.qkv under skip_attention_qk: the Q and K output rows stay BF16 and only the V rows run
//    FP8 (as core/ref/fp8_linear.h's fp32_out_rows). The Q and K columns are one BF16 GEMM that
//    reads and writes them in place (row strides); the layer's Fp8Linear holds W's V rows only
//    and works on dense copies of the V columns.
//  - the LM head runs in row chunks (the logits of one chunk stay under the memory plan's
//    bound); under FP8 one Fp8Linear, created for the chunk, serves every chunk (SetRows), and
//    the per-call statistics of each chunk are folded into the step's before the next chunk
//    overwrites them.
#include <cuda_bf16.h>

#include <algorithm>
#include <string>

#include "absl/strings/match.h"
#include "core/layer_policy.h"
#include "core/model_weights.h"
#include "kernels/cross_entropy.cuh"
#include "kernels/cuda_check.h"
#include "kernels/cuda_engine.h"
#include "kernels/fp8_step_stats.cuh"

namespace fp8d::kernels {
namespace {

using bf16 = __nv_bfloat16;

}  // namespace

bool CudaEngine::Fp8LayerIsVOnly(size_t layer) const {
  return recipe_.policy.skip_attention_qk && absl::EndsWith(gemm_layers_[layer], "attn.qkv");
}

int64_t CudaEngine::Fp8FirstRow(size_t layer) const {
  return Fp8LayerIsVOnly(layer) ? int64_t{model_.d_model} + model_.kv_dim() : 0;
}

GemmShape CudaEngine::Fp8LayerShape(size_t layer, int64_t tokens) const {
  const fp8d::GemmShape g = LayerGemmShape(model_, gemm_layers_[layer], tokens);
  const int64_t rows = gemm_layers_[layer] == "lm_head" ? std::min(tokens, lm_head_chunk_) : tokens;
  return GemmShape{rows, g.n - Fp8FirstRow(layer), g.k};
}

absl::Status CudaEngine::Linear(const void* x, int64_t rows, const std::string& weight, void* y,
                                int64_t out_features, int64_t in_features, const void* residual) {
  // The residual stream is added by the GEMM's epilogue (C = residual, beta = 1), which saves
  // the separate add's read and write of the whole activation.
  const int layer = Fp8LayerOf(weight);
  if (layer >= 0 && pass_fp8_[layer] && !Fp8LayerIsVOnly(layer)) {
    return fp8_linear_[layer]->Forward(static_cast<const bf16*>(x), static_cast<bf16*>(y),
                                       stream_, pass_for_backward_,
                                       static_cast<const bf16*>(residual));
  }
  if (layer >= 0 && pass_fp8_[layer]) {
    // Q and K in BF16, straight into their columns of y; V in FP8 into scratch.dnarrow (free in
    // the forward), then copied into its columns. No residual on the QKV projection.
    const int64_t qk = Fp8FirstRow(layer), v = out_features - qk;
    GemmConfig c;
    c.trans_b = true;
    c.ldd = out_features;
    if (absl::Status s = gemm_->Run(c, {rows, qk, in_features}, x, ParamBf16(weight), y, stream_);
        !s.ok())
      return s;
    bf16* v_dense = Buf<bf16>("scratch.dnarrow");
    if (absl::Status s = fp8_linear_[layer]->Forward(static_cast<const bf16*>(x), v_dense,
                                                     stream_, pass_for_backward_);
        !s.ok())
      return s;
    CUDA_RETURN_IF_ERROR(cudaMemcpy2DAsync(static_cast<bf16*>(y) + qk,
                                           out_features * sizeof(bf16), v_dense, v * sizeof(bf16),
                                           v * sizeof(bf16), rows, cudaMemcpyDeviceToDevice,
                                           stream_));
    return absl::OkStatus();
  }
  GemmConfig c;
  c.trans_b = true;
  if (residual != nullptr) c.beta = 1.f;
  return gemm_->Run(c, {rows, out_features, in_features}, x, ParamBf16(weight), y, stream_,
                    residual);
}

absl::Status CudaEngine::LinearBackward(const void* dy, const void* x, int64_t rows,
                                        const std::string& weight, void* dx,
                                        int64_t out_features, int64_t in_features) {
  const int layer = Fp8LayerOf(weight);
  if (layer >= 0 && pass_fp8_[layer] && !Fp8LayerIsVOnly(layer)) {
    return fp8_linear_[layer]->Backward(static_cast<const bf16*>(dy),
                                        static_cast<const bf16*>(x), static_cast<bf16*>(dx),
                                        Grad(weight), stream_);
  }
  // The rows [first, out_features) of W run here in BF16: all of them, or the Q and K rows
  // (columns [0, first) of dy) of a V-only FP8 layer, whose V part goes first and writes dx.
  int64_t bf16_rows = out_features;
  bool accumulate_dx = false;
  if (layer >= 0 && pass_fp8_[layer]) {
    const int64_t qk = Fp8FirstRow(layer), v = out_features - qk;
    // The V columns of dy, dense, in scratch.dnarrow (d(attn) there was consumed by the
    // attention backward before this GEMM).
    bf16* dv_dense = Buf<bf16>("scratch.dnarrow");
    CUDA_RETURN_IF_ERROR(cudaMemcpy2DAsync(dv_dense, v * sizeof(bf16),
                                           static_cast<const bf16*>(dy) + qk,
                                           out_features * sizeof(bf16), v * sizeof(bf16), rows,
                                           cudaMemcpyDeviceToDevice, stream_));
    if (absl::Status s = fp8_linear_[layer]->Backward(dv_dense, static_cast<const bf16*>(x),
                                                      static_cast<bf16*>(dx),
                                                      Grad(weight) + qk * in_features, stream_);
        !s.ok())
      return s;
    bf16_rows = qk;
    accumulate_dx = true;
  }
  if (dx != nullptr) {
    GemmConfig c;
    c.lda = bf16_rows == out_features ? 0 : out_features;
    if (accumulate_dx) c.beta = 1.f;
    if (absl::Status s = gemm_->Run(c, {rows, in_features, bf16_rows}, dy, ParamBf16(weight),
                                    dx, stream_);
        !s.ok())
      return s;
  }
  GemmConfig w;
  w.trans_a = true;
  w.lda = bf16_rows == out_features ? 0 : out_features;
  w.c_type = CUDA_R_32F;
  w.beta = 1.f;
  return gemm_->Run(w, {bf16_rows, in_features, rows}, dy, x, Grad(weight), stream_);
}

Fp8Linear* CudaEngine::FusedFp8Layer(const std::string& weight, int64_t rows,
                                     int64_t cols) const {
  if (!options_.fuse_fp8_casts) return nullptr;
  const int layer = Fp8LayerOf(weight);
  // A V-only layer needs its input in BF16 too (for the Q and K GEMM).
  if (layer < 0 || !pass_fp8_[layer] || Fp8LayerIsVOnly(layer) ||
      !fp8_linear_[layer]->TakesQuantizedOperands() || !FusedFp8CastFits(rows, cols)) {
    return nullptr;
  }
  return fp8_linear_[layer].get();
}

absl::Status CudaEngine::LmHeadAndLoss(const BatchShape& shape, float dloss, bool backward) {
  const int64_t n = shape.tokens();
  const int64_t d = model_.d_model, vocab = model_.vocab_size;
  const int64_t chunk = lm_head_chunk_;
  const std::string head = GemmLayerWeight(model_, "lm_head");
  const int layer = Fp8LayerOf(head);
  Fp8Linear* fp8 = layer >= 0 && pass_fp8_[layer] ? fp8_linear_[layer].get() : nullptr;
  bf16* logits = Buf<bf16>("act.logits");
  const bf16* x = Buf<bf16>("act.final.ln");
  bf16* dx = Buf<bf16>("scratch.dln");
  for (int64_t r0 = 0; r0 < n; r0 += chunk) {
    const int64_t rows = std::min(chunk, n - r0);
    if (fp8 != nullptr) {
      if (absl::Status s = fp8->SetRows(rows); !s.ok()) return s;
    }
    if (absl::Status s = Linear(x + r0 * d, rows, head, logits, vocab, d); !s.ok()) return s;
    // dloss / n per row: the chunk's rows are part of the mean over all n tokens.
    CrossEntropyForwardBackward(stream_, Buf<float>("act.loss") + r0,
                                backward ? logits : nullptr, logits,
                                Buf<int32_t>("act.targets") + r0, static_cast<int>(rows),
                                static_cast<int>(vocab),
                                dloss / static_cast<float>(n));
    if (!backward) continue;
    if (absl::Status s = LinearBackward(logits, x + r0 * d, rows, head, dx + r0 * d, vocab, d);
        !s.ok())
      return s;
    if (fp8 != nullptr) {
      // This chunk's INPUT and GRAD_OUTPUT stats into the step's, then cleared so that the
      // next chunk's (or the pass's final merge) counts nothing twice. The WEIGHT stats belong
      // to the weight cast and merge once per micro-batch with the other layers'.
      for (const int role : {kFp8Input, kFp8GradOutput}) {
        const int t = layer * kFp8LinearRoles + role;
        MergeFp8StepStats(fp8_step_stats_ + t, fp8_stats_ + t, fp8_active_ + t, fp8_amax_ + t,
                          1, stream_);
        CUDA_RETURN_IF_ERROR(cudaMemsetAsync(fp8_stats_ + t, 0, sizeof(Fp8CastStats), stream_));
      }
    }
  }
  return absl::OkStatus();
}

}  // namespace fp8d::kernels
