#include "core/ref/grad_norm.h"

#include <cmath>

namespace fp8d::ref {

float GlobalGradNorm(const std::vector<std::pair<const float*, int64_t>>& grads) {
  double ss = 0.0;
  for (const auto& [g, n] : grads) {
    for (int64_t i = 0; i < n; ++i) ss += static_cast<double>(g[i]) * g[i];
  }
  return static_cast<float>(std::sqrt(ss));
}

float ClipFactor(float norm, float max_norm) {
  if (max_norm > 0.f && norm > max_norm) return max_norm / norm;
  return 1.f;
}

}  // namespace fp8d::ref
