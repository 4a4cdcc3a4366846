// Fused softmax cross-entropy over BF16 logits (the LM head's output), matching
// core/ref/cross_entropy.h. One block per row: a first pass finds the row's max and sum of
// exponentials (online, in FP32), a second writes the logit gradient, in place over the logits
// if asked. The probabilities are never stored as a separate buffer.
#pragma once

#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <cstdint>

namespace fp8d::kernels {

// logits: [rows, vocab]; targets: [rows], each in [0, vocab) (validated on the host).
// row_losses[r] = logsumexp(logits[r]) - logits[r][targets[r]].
// dlogits (nullptr for eval, or equal to `logits` for in place) receives
// (softmax(logits[r]) - onehot(targets[r])) * grad_scale; for the mean loss over N tokens
// grad_scale is 1 / N.
void CrossEntropyForwardBackward(cudaStream_t stream, float* row_losses, __nv_bfloat16* dlogits,
                                 const __nv_bfloat16* logits, const int32_t* targets, int rows,
                                 int vocab, float grad_scale);

// mean_loss = (sum of row_losses, in double and a fixed order) / rows, one device float.
void MeanLoss(cudaStream_t stream, float* mean_loss, const float* row_losses, int rows);

}  // namespace fp8d::kernels
