#include "core/ref/linear.h"

#include <algorithm>
#include <cstdint>

namespace fp8d::ref {

void LinearForward(const float* x, const float* w, float* y, int m, int k, int n) {
  for (int i = 0; i < m; ++i) {
    const float* xr = x + static_cast<int64_t>(i) * k;
    float* yr = y + static_cast<int64_t>(i) * n;
    for (int o = 0; o < n; ++o) {
      const float* wr = w + static_cast<int64_t>(o) * k;
      float acc = 0.f;
      for (int j = 0; j < k; ++j) acc += xr[j] * wr[j];
      yr[o] = acc;
    }
  }
}

void LinearBackwardInput(const float* dy, const float* w, float* dx, int m, int k, int n) {
  for (int i = 0; i < m; ++i) {
    const float* dyr = dy + static_cast<int64_t>(i) * n;
    float* dxr = dx + static_cast<int64_t>(i) * k;
    std::fill(dxr, dxr + k, 0.f);
    for (int o = 0; o < n; ++o) {
      const float g = dyr[o];
      const float* wr = w + static_cast<int64_t>(o) * k;
      for (int j = 0; j < k; ++j) dxr[j] += g * wr[j];
    }
  }
}

void LinearBackwardWeight(const float* dy, const float* x, float* dw, int m, int k, int n) {
  for (int o = 0; o < n; ++o) {
    float* dwr = dw + static_cast<int64_t>(o) * k;
    for (int i = 0; i < m; ++i) {
      const float g = dy[static_cast<int64_t>(i) * n + o];
      const float* xr = x + static_cast<int64_t>(i) * k;
      for (int j = 0; j < k; ++j) dwr[j] += g * xr[j];
    }
  }
}

}  // namespace fp8d::ref
