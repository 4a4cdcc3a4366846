#include "core/ref/embedding.h"

#include <algorithm>

namespace fp8d::ref {

void EmbeddingForward(const int32_t* tokens, const float* table, float* out, int n, int dim) {
  for (int i = 0; i < n; ++i) {
    const float* row = table + static_cast<int64_t>(tokens[i]) * dim;
    std::copy(row, row + dim, out + static_cast<int64_t>(i) * dim);
  }
}

void EmbeddingBackward(const int32_t* tokens, const float* dout, float* dtable, int n, int dim) {
  for (int i = 0; i < n; ++i) {
    float* row = dtable + static_cast<int64_t>(tokens[i]) * dim;
    const float* g = dout + static_cast<int64_t>(i) * dim;
    for (int j = 0; j < dim; ++j) row[j] += g[j];
  }
}

}  // namespace fp8d::ref
