// Fused softmax cross-entropy, FP32 reference: logits in, mean loss and dlogits out, without a
// probability buffer beyond the row being processed (dlogits may overwrite the logits).
#pragma once

#include <cstdint>

namespace fp8d::ref {

// logits: [rows, vocab]; targets: [rows], each in [0, vocab) (the caller checks).
// Returns mean over rows of logsumexp(logits[r]) - logits[r][targets[r]], summed in double.
// When `dlogits` is non-null it receives d(dloss * mean loss)/dlogits =
// (softmax(logits[r]) - onehot(targets[r])) * dloss / rows; it may equal `logits`.
float CrossEntropyForwardBackward(const float* logits, const int32_t* targets, float* dlogits,
                                  int rows, int vocab, float dloss);

}  // namespace fp8d::ref
