// A simple causal grouped-query attention on BF16 Q/K/V with FP32 softmax, forward and
// backward, matching core/ref/attention.h. One warp per query row (forward, dQ) or per key row
// (dK, dV), walking the other side 32 rows at a time with one row per lane; no tensor cores and
// no sharing between warps: slow but easy to check. It is the oracle for the cuDNN path on the
// GPU and a fallback the engine may use while that path is validated.
//
// Layout: q, k, v point into the fused QKV buffer, rows (b * seq_len + t) `qkv_stride` elements
// apart; query head h reads kv head h / (n_head / n_kv_head). Scores are (q . k) / sqrt(head_dim)
// over keys 0..t. The forward saves the log-sum-exp per (b, h, t) for the backward.
#pragma once

#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <cstddef>

namespace fp8d::kernels {

struct AttentionDims {
  int batch = 0;
  int seq_len = 0;
  int n_head = 0;
  int n_kv_head = 0;
  int head_dim = 0;    // even, at most kMaxReferenceHeadDim
  int qkv_stride = 0;  // elements between consecutive token rows of q, k, v (and dq, dk, dv)
};

constexpr int kMaxReferenceHeadDim = 256;

// out: [batch * seq_len, n_head * head_dim]; lse: [batch, n_head, seq_len] (FP32).
void ReferenceAttentionForward(cudaStream_t stream, __nv_bfloat16* out, float* lse,
                               const __nv_bfloat16* q, const __nv_bfloat16* k,
                               const __nv_bfloat16* v, const AttentionDims& dims);

// Scratch bytes for the backward: one FP32 per (b, h, t) for dout . out.
size_t ReferenceAttentionBackwardWorkspaceBytes(const AttentionDims& dims);

// dq, dk, dv: same layout as q, k, v; every head column of every row is overwritten (the rest
// of each row is left alone). dK and dV sum over the query heads of their group in a fixed
// order, so results are deterministic.
void ReferenceAttentionBackward(cudaStream_t stream, __nv_bfloat16* dq, __nv_bfloat16* dk,
                                __nv_bfloat16* dv, const __nv_bfloat16* dout,
                                const __nv_bfloat16* q, const __nv_bfloat16* k,
                                const __nv_bfloat16* v, const __nv_bfloat16* out, const float* lse,
                                const AttentionDims& dims, void* workspace,
                                size_t workspace_bytes);

}  // namespace fp8d::kernels
