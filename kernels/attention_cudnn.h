// Causal grouped-query flash attention through cuDNN's backend graph API, forward and backward,
// on the same layout as kernels/attention_reference.cuh (Q, K, V as column ranges of the fused
// QKV rows; output [tokens, n_head * head_dim]; FP32 log-sum-exp per (batch, head, query)).
//
// cuDNN 9.19's single SDPA operation (CUDNN_BACKEND_OPERATION_SDPA_FWD/BWD_DESCRIPTOR) has no
// causal mask yet (the diagonal-band mask and the score subgraph arrive in 9.20/9.21), so the
// graphs here are the composite form cuDNN's fused flash-attention engines recognise:
//   forward:  S = Q K^T * scale; causal select; M = max S; E = exp(S - M); Z = sum E;
//             LSE = M + log Z; O = (E / Z) V
//   backward: P = exp(S - LSE); dV = P^T dO; dP = dO V^T; dS = P (dP - rowsum(dO * O)) * scale;
//             dK = dS^T Q; dQ = dS K (accumulated in FP32, then converted)
// with GQA expressed by K/V having fewer heads than Q. Graphs and execution plans are built
// once per shape and cached (keyed by AttentionGraphKey). Engine configurations that cuDNN marks
// non-deterministic are skipped, so training stays bit-reproducible.
#pragma once

#include <cudnn.h>
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <tuple>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "kernels/attention_reference.cuh"

namespace fp8d::kernels {

struct AttentionGraphKey {
  int batch, seq_len, n_head, n_kv_head, head_dim, qkv_stride;
  bool backward;
  bool operator<(const AttentionGraphKey& o) const {
    return std::tie(batch, seq_len, n_head, n_kv_head, head_dim, qkv_stride, backward) <
           std::tie(o.batch, o.seq_len, o.n_head, o.n_kv_head, o.head_dim, o.qkv_stride,
                    o.backward);
  }
};

class CudnnAttention {
 public:
  // A cuDNN handle bound to `stream`. FAILED_PRECONDITION when cuDNN cannot be loaded.
  static absl::StatusOr<std::unique_ptr<CudnnAttention>> Create(cudaStream_t stream);
  ~CudnnAttention();
  CudnnAttention(const CudnnAttention&) = delete;
  CudnnAttention& operator=(const CudnnAttention&) = delete;

  // Builds (or finds) the forward and backward plans for `dims` and returns the workspace the
  // larger of them needs, including the FP32 scratch of the backward (rowsum(dO * O) and the dQ
  // accumulator). FAILED_PRECONDITION with cuDNN's reasons when no deterministic engine runs the
  // forward graph. A backward cuDNN refuses does not fail Prepare (the forward is still usable);
  // BackwardStatus says whether it is available.
  absl::StatusOr<size_t> Prepare(const AttentionDims& dims);
  absl::Status BackwardStatus(const AttentionDims& dims);

  absl::Status Forward(__nv_bfloat16* out, float* lse, const __nv_bfloat16* q,
                       const __nv_bfloat16* k, const __nv_bfloat16* v, const AttentionDims& dims,
                       void* workspace, size_t workspace_bytes);
  // dq, dk, dv in the QKV layout (dims.qkv_stride between rows).
  absl::Status Backward(__nv_bfloat16* dq, __nv_bfloat16* dk, __nv_bfloat16* dv,
                        const __nv_bfloat16* dout, const __nv_bfloat16* q,
                        const __nv_bfloat16* k, const __nv_bfloat16* v,
                        const __nv_bfloat16* out, const float* lse, const AttentionDims& dims,
                        void* workspace, size_t workspace_bytes);

  // The cuDNN engine chosen for the shape (or why none was), for logs.
  std::string PlanDescription(const AttentionDims& dims, bool backward);

  // Shapes tried, forward and backward counted apart (refused ones included).
  size_t cached_graphs() const { return plans_.size(); }

  struct Plan;

 private:
  explicit CudnnAttention(cudnnHandle_t handle);
  absl::StatusOr<Plan*> GetPlan(const AttentionDims& dims, bool backward);

  cudnnHandle_t handle_;
  std::map<AttentionGraphKey, std::unique_ptr<Plan>> plans_;
};

}  // namespace fp8d::kernels
