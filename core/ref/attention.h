// Causal grouped-query attention (scaled dot product, softmax in FP32), reference.
//
// Forward saves the log-sum-exp of each query's scaled scores, as flash attention and cuDNN do;
// backward recomputes the probabilities from it instead of keeping a [T, T] matrix per head.
#pragma once

namespace fp8d::ref {

struct AttentionShape {
  int batch = 0;
  int seq_len = 0;
  int n_head = 0;     // query heads
  int n_kv_head = 0;  // key/value heads; query head h reads kv head h / (n_head / n_kv_head)
  int head_dim = 0;
  int qkv_stride = 0;  // floats between consecutive token rows of q, k and v (and dq, dk, dv)
};

// q: row (b * seq_len + t) at q + row * qkv_stride, head h at offset h * head_dim; k and v alike
// with n_kv_head heads (in the fused QKV buffer they are q + d_model and q + d_model + kv_dim).
// out: [batch * seq_len, n_head * head_dim]. lse: [batch, n_head, seq_len]. Query t attends to
// keys 0..t with scores (q . k) / sqrt(head_dim).
void AttentionForward(const float* q, const float* k, const float* v, float* out, float* lse,
                      const AttentionShape& s);

// dq, dk, dv: same layout as q, k, v; their head columns are overwritten (other columns of the
// rows are left alone). out and lse are the forward's.
void AttentionBackward(const float* dout, const float* q, const float* k, const float* v,
                       const float* out, const float* lse, float* dq, float* dk, float* dv,
                       const AttentionShape& s);

}  // namespace fp8d::ref
