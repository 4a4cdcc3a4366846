// Admission check at SubmitJob: estimates the memory a job needs before anything is allocated,
// so a model that cannot fit is refused with RESOURCE_EXHAUSTED and the numbers, instead of
// being queued and failing later. The engine factory checks again, precisely, at start.
#pragma once

#include <cstdint>

#include "absl/status/status.h"
#include "core/model_config.h"

namespace fp8d {

// FP32 weights, gradients and both AdamW moments, plus activations kept for backward.
int64_t EstimateTrainingBytes(const ModelConfig& model, int batch_size, int seq_len);

// OK when `device_memory_bytes` is 0 (unknown) or the estimate fits.
absl::Status CheckFits(const ModelConfig& model, int batch_size, int seq_len,
                       int64_t device_memory_bytes);

}  // namespace fp8d
