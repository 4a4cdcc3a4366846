#include "server/fit_estimate.h"

#include "absl/strings/str_format.h"

namespace fp8d {
namespace {

constexpr int64_t kStateCopies = 4;        // weights, gradients, AdamW m and v
constexpr int64_t kBytesPerValue = 4;      // FP32 master copies
// Per token and layer, values saved for backward: norms, QKV, attention output, residuals
// (about 8 d_model wide) and the SwiGLU gate/up/product (3 d_ff wide).
constexpr int64_t kActivationDModelWidths = 8;
constexpr int64_t kActivationDffWidths = 3;

}  // namespace

int64_t EstimateTrainingBytes(const ModelConfig& m, int batch_size, int seq_len) {
  const int64_t tokens = static_cast<int64_t>(batch_size) * seq_len;
  const int64_t state = m.ParamCount() * kStateCopies * kBytesPerValue;
  const int64_t per_layer =
      tokens * (kActivationDModelWidths * m.d_model + kActivationDffWidths * m.d_ff) +
      static_cast<int64_t>(batch_size) * m.n_head * seq_len * seq_len;  // attention scores
  const int64_t logits = 2 * tokens * m.vocab_size;  // logits and their gradient
  return state + (per_layer * m.n_layer + logits) * kBytesPerValue;
}

absl::Status CheckFits(const ModelConfig& model, int batch_size, int seq_len,
                       int64_t device_memory_bytes) {
  if (device_memory_bytes <= 0) return absl::OkStatus();
  const int64_t need = EstimateTrainingBytes(model, batch_size, seq_len);
  if (need <= device_memory_bytes) return absl::OkStatus();
  return absl::ResourceExhaustedError(absl::StrFormat(
      "model will not fit: %d parameters with batch_size %d x seq_len %d need about %.2f GiB, "
      "the device has %.2f GiB",
      model.ParamCount(), batch_size, seq_len, need / 1073741824.0,
      device_memory_bytes / 1073741824.0));
}

}  // namespace fp8d
