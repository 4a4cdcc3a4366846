#include "core/ref/cross_entropy.h"

#include <cmath>

namespace fp8d::ref {

float CrossEntropyForwardBackward(const float* logits, const int32_t* targets, float* dlogits,
                                  int rows, int vocab, float dloss) {
  double total = 0.0;
  const float row_grad = dloss / static_cast<float>(rows);
  for (int r = 0; r < rows; ++r) {
    const float* lr = logits + static_cast<int64_t>(r) * vocab;
    float mx = lr[0];
    for (int j = 1; j < vocab; ++j) mx = std::fmax(mx, lr[j]);
    float sum = 0.f;
    for (int j = 0; j < vocab; ++j) sum += std::exp(lr[j] - mx);
    const float lse = mx + std::log(sum);
    const int32_t target = targets[r];
    total += static_cast<double>(lse - lr[target]);
    if (dlogits != nullptr) {
      // Written in place when dlogits == logits: every lr[j] is read before dr[j] is written.
      float* dr = dlogits + static_cast<int64_t>(r) * vocab;
      for (int j = 0; j < vocab; ++j) {
        const float p = std::exp(lr[j] - lse);
        dr[j] = (p - (j == target ? 1.f : 0.f)) * row_grad;
      }
    }
  }
  return static_cast<float>(total / rows);
}

}  // namespace fp8d::ref
