// Token embedding: forward lookup into BF16 activations and a deterministic backward.
//
// The backward needs no float atomics: tokens are stably sorted (CUB radix sort, positions as
// values), so each distinct token's rows form one segment in increasing position order, and
// one block owns that token's gradient row and adds the segment in that order. The result is
// bit-identical from run to run and sums in the same order as core/ref/embedding.h.
#pragma once

#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <cstddef>
#include <cstdint>

namespace fp8d::kernels {

// out[i, :] = bf16(table[tokens[i], :]) for i in [0, n). Tokens must lie in [0, vocab) (the
// caller validates batches on the host).
void EmbeddingForward(cudaStream_t stream, __nv_bfloat16* out, const int32_t* tokens,
                      const float* table, int n, int dim);

// Scratch bytes EmbeddingBackward needs for n tokens over a vocabulary of `vocab`. CUB sizes
// its sort for the current device, so this needs a CUDA device (it aborts without one).
size_t EmbeddingBackwardWorkspaceBytes(int n, int vocab);

// dtable[tokens[i], :] += dout[i, :] (FP32), rows in increasing i.
void EmbeddingBackward(cudaStream_t stream, float* dtable, const int32_t* tokens,
                       const __nv_bfloat16* dout, int n, int dim, int vocab, void* workspace,
                       size_t workspace_bytes);

}  // namespace fp8d::kernels
