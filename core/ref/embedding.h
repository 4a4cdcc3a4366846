// Token embedding: forward lookup and backward scatter-add, FP32 reference.
#pragma once

#include <cstdint>

namespace fp8d::ref {

// out[i, :] = table[tokens[i], :] for i in [0, n). Tokens must be in range (the caller checks).
void EmbeddingForward(const int32_t* tokens, const float* table, float* out, int n, int dim);

// dtable[tokens[i], :] += dout[i, :], rows in increasing i (a fixed order, so repeated tokens
// sum the same way every run).
void EmbeddingBackward(const int32_t* tokens, const float* dout, float* dtable, int n, int dim);

}  // namespace fp8d::ref
