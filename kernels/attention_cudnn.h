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
//             dK = dS^T Q; dQ = dS K
// with GQA expressed by K/V having fewer heads than Q. Graphs and execution plans are built
// once per shape and cached (keyed by AttentionGraphKey).
//
// Both are deterministic: engine configurations that cuDNN marks non-deterministic are skipped,
// and the backward graph has no FP32 dQ accumulator (which the fused engine fills with atomics in
// completion order). Instead cuDNN keeps dS in its workspace, h x s^2 BF16 values per sequence,
// so the backward runs a few sequences per call: as many as fit `ds_workspace_limit_bytes`.
// BackwardDq::kAtomicAccumulator builds the accumulator form, which is not reproducible; it
// exists to measure what determinism costs (fp8d-bench --attention cudnn-atomic-dq).
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
  // How the backward forms dQ = dS K (see the top of this file).
  enum class BackwardDq { kOrdered, kAtomicAccumulator };

  // A cuDNN handle bound to `stream`. FAILED_PRECONDITION when cuDNN cannot be loaded.
  // `ds_workspace_limit_bytes` bounds the backward's dS workspace (at least one sequence's).
  static absl::StatusOr<std::unique_ptr<CudnnAttention>> Create(
      cudaStream_t stream, size_t ds_workspace_limit_bytes = kDefaultDsWorkspaceLimitBytes,
      BackwardDq dq = BackwardDq::kOrdered);
  static constexpr size_t kDefaultDsWorkspaceLimitBytes = size_t{512} << 20;
  ~CudnnAttention();
  CudnnAttention(const CudnnAttention&) = delete;
  CudnnAttention& operator=(const CudnnAttention&) = delete;

  // Builds (or finds) the forward and backward plans for `dims`, the largest shape that will
  // run, and returns the workspace the larger of them needs, including the backward's FP32
  // rowsum(dO * O). Later shapes run within that workspace. FAILED_PRECONDITION with cuDNN's reasons when no deterministic engine runs the
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
  CudnnAttention(cudnnHandle_t handle, size_t ds_workspace_limit_bytes, BackwardDq dq);
  absl::StatusOr<Plan*> GetPlan(const AttentionDims& dims, bool backward);
  // Sequences per backward call: the largest divisor of dims.batch whose dS fits the budget.
  int BackwardBatchChunk(const AttentionDims& dims) const;

  cudnnHandle_t handle_;
  size_t ds_budget_bytes_;
  BackwardDq dq_;
  std::map<AttentionGraphKey, std::unique_ptr<Plan>> plans_;
};

}  // namespace fp8d::kernels
