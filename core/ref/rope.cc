#include "core/ref/rope.h"

#include <cmath>
#include <cstdint>

namespace fp8d::ref {
namespace {

// sign = +1 rotates forward, -1 applies the inverse (transposed) rotation.
void Rotate(float* x, int batch, int seq_len, int n_heads, int head_dim, int row_stride,
            float theta, float sign) {
  for (int t = 0; t < seq_len; ++t) {
    for (int i = 0; i < head_dim / 2; ++i) {
      const float freq = std::pow(theta, -2.f * static_cast<float>(i) / head_dim);
      const float angle = static_cast<float>(t) * freq;
      const float c = std::cos(angle);
      const float s = sign * std::sin(angle);
      for (int b = 0; b < batch; ++b) {
        float* row = x + (static_cast<int64_t>(b) * seq_len + t) * row_stride;
        for (int h = 0; h < n_heads; ++h) {
          float* p = row + h * head_dim + 2 * i;
          const float x0 = p[0], x1 = p[1];
          p[0] = x0 * c - x1 * s;
          p[1] = x0 * s + x1 * c;
        }
      }
    }
  }
}

}  // namespace

void RopeForward(float* x, int batch, int seq_len, int n_heads, int head_dim, int row_stride,
                 float theta) {
  Rotate(x, batch, seq_len, n_heads, head_dim, row_stride, theta, 1.f);
}

void RopeBackward(float* dx, int batch, int seq_len, int n_heads, int head_dim, int row_stride,
                  float theta) {
  Rotate(dx, batch, seq_len, n_heads, head_dim, row_stride, theta, -1.f);
}

}  // namespace fp8d::ref
