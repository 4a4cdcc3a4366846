// Global gradient L2 norm and the clipping factor, FP32 reference.
#pragma once

#include <cstdint>
#include <utility>
#include <vector>

namespace fp8d::ref {

// sqrt of the sum of squares over all tensors, accumulated in double in the given order (a fixed
// order makes the norm bit-identical run to run). NaN or inf in any gradient gives a non-finite
// norm.
float GlobalGradNorm(const std::vector<std::pair<const float*, int64_t>>& grads);

// Factor the gradients are multiplied by: max_norm / norm when max_norm > 0 and norm > max_norm,
// else 1.
float ClipFactor(float norm, float max_norm);

}  // namespace fp8d::ref
