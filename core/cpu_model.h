// The Llama decoder's forward and backward pass on the CPU in FP32, built from the reference ops
// in core/ref/, with FP8 emulated in the GEMM layers a recipe selects. Used by CpuEngine and by
// the whole-model gradient check.
#pragma once

#include <cstdint>
#include <vector>

#include "absl/types/span.h"
#include "core/engine.h"
#include "core/model_config.h"
#include "core/ref/fp8_linear.h"
#include "core/tensor_map.h"

namespace fp8d {

// How one GEMM layer runs in a pass; a span of these is indexed like GemmLayerNames(config).
struct GemmQuant {
  bool fp8 = false;
  ref::Fp8LinearQuant quant;             // used when fp8
  ref::Fp8LinearStats* stats = nullptr;  // where operand stats are merged; may be null
};

class CpuModel {
 public:
  explicit CpuModel(const ModelConfig& config);

  // Mean cross-entropy of `batch` under `weights` (names from ParamSpecs). An empty `gemms`
  // runs every GEMM in FP32. When `grads` is non-null (same names and shapes as the weights)
  // the backward pass accumulates d(dloss * loss)/dparam into it. Token ids must be in range.
  float ForwardBackward(const TensorMap& weights, const TokenBatch& batch,
                        absl::Span<const GemmQuant> gemms, float dloss, TensorMap* grads);

  // Bytes of activations and scratch held after the largest pass so far.
  int64_t ActivationBytes() const;

 private:
  // Saved forward activations of one decoder layer, [tokens, ...] row-major.
  struct LayerActs {
    std::vector<float> res_in, ln1, rstd1, qkv, att, lse, res_mid, ln2, rstd2, gate_up, h;
  };

  void Resize(int batch, int seq_len);
  void Linear(absl::Span<const GemmQuant> gemms, int layer, const float* x, const float* w,
              float* y, int m, int k, int n);
  void LinearBackward(absl::Span<const GemmQuant> gemms, int layer, const float* dy, const float* x,
                      const float* w, float* dx, float* dw, int m, int k, int n);

  ModelConfig config_;
  int batch_ = 0, seq_len_ = 0;
  std::vector<LayerActs> layers_;
  std::vector<float> res_out_, lnf_, rstdf_, logits_;
  std::vector<float> proj_, dres_, dtmp_, dln_, datt_, dqkv_, dh_, dgate_up_;
};

}  // namespace fp8d
