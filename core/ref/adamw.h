// AdamW with decoupled weight decay and bias correction, FP32 reference.
#pragma once

#include <cstdint>

namespace fp8d::ref {

struct AdamWArgs {
  float lr = 0.f;
  float beta1 = 0.9f;
  float beta2 = 0.95f;
  float eps = 1e-8f;
  float weight_decay = 0.f;  // 0 for RMSNorm gains (ParamSpec::is_norm)
  int64_t step = 1;          // 1-based count of updates including this one (bias correction)
};

// With g = grad * grad_scale (the clipping factor):
//   m = beta1 m + (1 - beta1) g;  v = beta2 v + (1 - beta2) g^2
//   p -= lr * ((m / (1 - beta1^step)) / (sqrt(v / (1 - beta2^step)) + eps) + weight_decay * p)
void AdamWUpdate(float* param, const float* grad, float* m, float* v, int64_t n,
                 const AdamWArgs& args, float grad_scale);

}  // namespace fp8d::ref
