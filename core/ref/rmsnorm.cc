#include "core/ref/rmsnorm.h"

#include <cmath>
#include <cstdint>

namespace fp8d::ref {

void RmsNormForward(const float* x, const float* w, float* y, float* rstd, int rows, int dim,
                    float eps) {
  for (int r = 0; r < rows; ++r) {
    const float* xr = x + static_cast<int64_t>(r) * dim;
    float* yr = y + static_cast<int64_t>(r) * dim;
    float ss = 0.f;
    for (int j = 0; j < dim; ++j) ss += xr[j] * xr[j];
    const float s = 1.f / std::sqrt(ss / dim + eps);
    rstd[r] = s;
    for (int j = 0; j < dim; ++j) yr[j] = xr[j] * s * w[j];
  }
}

void RmsNormBackward(const float* dy, const float* x, const float* w, const float* rstd, float* dx,
                     float* dw, int rows, int dim) {
  // With xhat = x * rstd and g = dy * w: dx = rstd * (g - xhat * mean(g * xhat)).
  for (int r = 0; r < rows; ++r) {
    const float* xr = x + static_cast<int64_t>(r) * dim;
    const float* dyr = dy + static_cast<int64_t>(r) * dim;
    float* dxr = dx + static_cast<int64_t>(r) * dim;
    const float s = rstd[r];
    float dot = 0.f;
    for (int j = 0; j < dim; ++j) dot += dyr[j] * w[j] * xr[j] * s;
    const float mean = dot / dim;
    for (int j = 0; j < dim; ++j) {
      const float xhat = xr[j] * s;
      dxr[j] = s * (dyr[j] * w[j] - xhat * mean);
      dw[j] += dyr[j] * xhat;
    }
  }
}

}  // namespace fp8d::ref
