#include "core/ref/adamw.h"

#include <cmath>

namespace fp8d::ref {

void AdamWUpdate(float* param, const float* grad, float* m, float* v, int64_t n, const AdamWArgs& a,
                 float grad_scale) {
  const float bc1 = 1.f - std::pow(a.beta1, static_cast<float>(a.step));
  const float bc2 = 1.f - std::pow(a.beta2, static_cast<float>(a.step));
  for (int64_t i = 0; i < n; ++i) {
    const float g = grad[i] * grad_scale;
    m[i] = a.beta1 * m[i] + (1.f - a.beta1) * g;
    v[i] = a.beta2 * v[i] + (1.f - a.beta2) * g * g;
    const float mhat = m[i] / bc1;
    const float vhat = v[i] / bc2;
    param[i] -= a.lr * (mhat / (std::sqrt(vhat) + a.eps) + a.weight_decay * param[i]);
  }
}

}  // namespace fp8d::ref
