// Global gradient L2 norm and the clipping factor, deterministic in two passes:
//  1. GradSquaredNormPartials: a fixed grid of kGradNormBlocks blocks writes one double partial
//     sum of squares per block (grid-stride order and block tree fixed by n alone);
//  2. GradNormFinalize: one block sums all partials in a fixed order, takes the square root and
//     writes the norm and the clipping factor of core/ref/grad_norm.h.
// The same inputs give bit-identical results on every run, whatever the GPU.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

namespace fp8d::kernels {

// Partials each GradSquaredNormPartials call writes.
constexpr int kGradNormBlocks = 512;

// partials[0 .. kGradNormBlocks) = per-block sums of grad^2 (in double). For several gradient
// buffers, give each call its own slice of one partials array and finalize over all of them.
void GradSquaredNormPartials(cudaStream_t stream, double* partials, const float* grad, int64_t n);

// norm = sqrt(sum of partials); clip_factor = max_norm / norm when max_norm > 0 and
// norm > max_norm, else 1; NaN when the norm is not finite, so AdamWUpdate skips the step.
// Either output pointer may be nullptr.
void GradNormFinalize(cudaStream_t stream, float* norm, float* clip_factor, const double* partials,
                      int n_partials, float max_norm);

}  // namespace fp8d::kernels
