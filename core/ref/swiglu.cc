#include "core/ref/swiglu.h"

#include <cmath>
#include <cstdint>

namespace fp8d::ref {

void SwiGluForward(const float* gate_up, float* h, int rows, int dim) {
  for (int r = 0; r < rows; ++r) {
    const float* g = gate_up + static_cast<int64_t>(r) * 2 * dim;
    const float* u = g + dim;
    float* hr = h + static_cast<int64_t>(r) * dim;
    for (int j = 0; j < dim; ++j) {
      const float sig = 1.f / (1.f + std::exp(-g[j]));
      hr[j] = g[j] * sig * u[j];
    }
  }
}

void SwiGluBackward(const float* dh, const float* gate_up, float* dgate_up, int rows, int dim) {
  for (int r = 0; r < rows; ++r) {
    const float* g = gate_up + static_cast<int64_t>(r) * 2 * dim;
    const float* u = g + dim;
    const float* dhr = dh + static_cast<int64_t>(r) * dim;
    float* dg = dgate_up + static_cast<int64_t>(r) * 2 * dim;
    float* du = dg + dim;
    for (int j = 0; j < dim; ++j) {
      const float sig = 1.f / (1.f + std::exp(-g[j]));
      const float silu = g[j] * sig;
      // d silu / dg = sig * (1 + g * (1 - sig))
      dg[j] = dhr[j] * u[j] * sig * (1.f + g[j] * (1.f - sig));
      du[j] = dhr[j] * silu;
    }
  }
}

}  // namespace fp8d::ref
