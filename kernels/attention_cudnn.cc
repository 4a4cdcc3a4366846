#include "kernels/attention_cudnn.h"

#include <cmath>
#include <limits>
#include <vector>

#include "absl/strings/str_cat.h"

namespace fp8d::kernels {
namespace {

// Tensor ids the variant pack binds to device (or, for the scalars, host) pointers.
enum Uid : int64_t {
  kQ = 1, kK = 2, kV = 3, kO = 4, kLse = 5, kScale = 6, kNegInf = 7,
  kDO = 8, kDQ = 9, kDK = 10, kDV = 11, kRowSum = 12, kDQAccum = 13, kOne = 14,
  kFirstVirtual = 100,
};

constexpr size_t kAlign = 256;
size_t AlignUp(size_t n) { return (n + kAlign - 1) / kAlign * kAlign; }

std::string CudnnMessage(cudnnStatus_t s) {
  char last[1024] = {0};
  cudnnGetLastErrorString(last, sizeof(last));
  return absl::StrCat(cudnnGetErrorString(s), last[0] ? absl::StrCat(": ", last) : "");
}

using Desc = cudnnBackendDescriptor_t;

// Builds one operation graph; the first failing call is kept and reported.
class GraphBuilder {
 public:
  explicit GraphBuilder(cudnnHandle_t handle) : handle_(handle) {}
  ~GraphBuilder() {
    for (Desc d : owned_) cudnnBackendDestroyDescriptor(d);
  }

  const absl::Status& status() const { return status_; }

  Desc Make(cudnnBackendDescriptorType_t type) {
    Desc d = nullptr;
    Check(cudnnBackendCreateDescriptor(type, &d), "create descriptor");
    if (d != nullptr) owned_.push_back(d);
    return d;
  }
  void Set(Desc d, cudnnBackendAttributeName_t name, cudnnBackendAttributeType_t type,
           int64_t count, const void* value, const char* what) {
    if (!status_.ok() || d == nullptr) return;
    Check(cudnnBackendSetAttribute(d, name, type, count, value), what);
  }
  void Finalize(Desc d, const char* what) {
    if (!status_.ok() || d == nullptr) return;
    Check(cudnnBackendFinalize(d), what);
  }

  Desc Tensor(cudnnDataType_t type, std::vector<int64_t> dims, std::vector<int64_t> strides,
              int64_t uid = 0, bool by_value = false) {
    const bool is_virtual = uid == 0;
    if (is_virtual) uid = next_virtual_++;
    Desc t = Make(CUDNN_BACKEND_TENSOR_DESCRIPTOR);
    const int64_t alignment = 16;
    Set(t, CUDNN_ATTR_TENSOR_DATA_TYPE, CUDNN_TYPE_DATA_TYPE, 1, &type, "tensor type");
    Set(t, CUDNN_ATTR_TENSOR_DIMENSIONS, CUDNN_TYPE_INT64, dims.size(), dims.data(), "dims");
    Set(t, CUDNN_ATTR_TENSOR_STRIDES, CUDNN_TYPE_INT64, strides.size(), strides.data(),
        "strides");
    Set(t, CUDNN_ATTR_TENSOR_UNIQUE_ID, CUDNN_TYPE_INT64, 1, &uid, "uid");
    Set(t, CUDNN_ATTR_TENSOR_BYTE_ALIGNMENT, CUDNN_TYPE_INT64, 1, &alignment, "alignment");
    Set(t, CUDNN_ATTR_TENSOR_IS_VIRTUAL, CUDNN_TYPE_BOOLEAN, 1, &is_virtual, "virtual");
    if (by_value) {
      Set(t, CUDNN_ATTR_TENSOR_IS_BY_VALUE, CUDNN_TYPE_BOOLEAN, 1, &by_value, "by value");
    }
    Finalize(t, "tensor");
    return t;
  }
  // A virtual tensor shaped like `dims` with packed strides.
  Desc Virtual(cudnnDataType_t type, const std::vector<int64_t>& dims) {
    std::vector<int64_t> strides(dims.size(), 1);
    for (int i = static_cast<int>(dims.size()) - 2; i >= 0; --i)
      strides[i] = strides[i + 1] * dims[i + 1];
    return Tensor(type, dims, strides);
  }

  void Pointwise(cudnnPointwiseMode_t mode, Desc x, Desc b, Desc y, Desc t = nullptr,
                 int64_t axis = -1, cudnnDataType_t prec = CUDNN_DATA_FLOAT) {
    Desc pw = Make(CUDNN_BACKEND_POINTWISE_DESCRIPTOR);
    Set(pw, CUDNN_ATTR_POINTWISE_MODE, CUDNN_TYPE_POINTWISE_MODE, 1, &mode, "pointwise mode");
    Set(pw, CUDNN_ATTR_POINTWISE_MATH_PREC, CUDNN_TYPE_DATA_TYPE, 1, &prec, "pointwise prec");
    if (axis >= 0) Set(pw, CUDNN_ATTR_POINTWISE_AXIS, CUDNN_TYPE_INT64, 1, &axis, "axis");
    Finalize(pw, "pointwise descriptor");
    Desc op = Make(CUDNN_BACKEND_OPERATION_POINTWISE_DESCRIPTOR);
    Set(op, CUDNN_ATTR_OPERATION_POINTWISE_PW_DESCRIPTOR, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &pw,
        "pw desc");
    Set(op, CUDNN_ATTR_OPERATION_POINTWISE_XDESC, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &x, "x");
    if (b) Set(op, CUDNN_ATTR_OPERATION_POINTWISE_BDESC, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &b, "b");
    Set(op, CUDNN_ATTR_OPERATION_POINTWISE_YDESC, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &y, "y");
    if (t) Set(op, CUDNN_ATTR_OPERATION_POINTWISE_TDESC, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &t, "t");
    Finalize(op, "pointwise op");
    ops_.push_back(op);
  }
  void Matmul(Desc a, Desc b, Desc c) {
    Desc mm = Make(CUDNN_BACKEND_MATMUL_DESCRIPTOR);
    const cudnnDataType_t comp = CUDNN_DATA_FLOAT;
    Set(mm, CUDNN_ATTR_MATMUL_COMP_TYPE, CUDNN_TYPE_DATA_TYPE, 1, &comp, "matmul comp");
    Finalize(mm, "matmul descriptor");
    Desc op = Make(CUDNN_BACKEND_OPERATION_MATMUL_DESCRIPTOR);
    Set(op, CUDNN_ATTR_OPERATION_MATMUL_ADESC, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &a, "a");
    Set(op, CUDNN_ATTR_OPERATION_MATMUL_BDESC, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &b, "b");
    Set(op, CUDNN_ATTR_OPERATION_MATMUL_CDESC, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &c, "c");
    Set(op, CUDNN_ATTR_OPERATION_MATMUL_DESC, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &mm, "mm");
    Finalize(op, "matmul op");
    ops_.push_back(op);
  }
  void Reduction(cudnnReduceTensorOp_t mode, Desc x, Desc y) {
    Desc red = Make(CUDNN_BACKEND_REDUCTION_DESCRIPTOR);
    const cudnnDataType_t comp = CUDNN_DATA_FLOAT;
    Set(red, CUDNN_ATTR_REDUCTION_OPERATOR, CUDNN_TYPE_REDUCTION_OPERATOR_TYPE, 1, &mode,
        "reduction op");
    Set(red, CUDNN_ATTR_REDUCTION_COMP_TYPE, CUDNN_TYPE_DATA_TYPE, 1, &comp, "reduction comp");
    Finalize(red, "reduction descriptor");
    Desc op = Make(CUDNN_BACKEND_OPERATION_REDUCTION_DESCRIPTOR);
    Set(op, CUDNN_ATTR_OPERATION_REDUCTION_XDESC, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &x, "x");
    Set(op, CUDNN_ATTR_OPERATION_REDUCTION_YDESC, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &y, "y");
    Set(op, CUDNN_ATTR_OPERATION_REDUCTION_DESC, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &red, "red");
    Finalize(op, "reduction op");
    ops_.push_back(op);
  }
  void Reshape(Desc x, Desc y) {
    Desc op = Make(CUDNN_BACKEND_OPERATION_RESHAPE_DESCRIPTOR);
    Set(op, CUDNN_ATTR_OPERATION_RESHAPE_XDESC, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &x, "x");
    Set(op, CUDNN_ATTR_OPERATION_RESHAPE_YDESC, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &y, "y");
    Finalize(op, "reshape op");
    ops_.push_back(op);
  }

  // Scores masked to keys at or before the query (top-left causal), like the frontend's
  // diagonal-band mask: row index >= column index keeps the score, else -inf.
  Desc CausalMask(Desc scores, const std::vector<int64_t>& dims, Desc neg_inf) {
    Desc row = Virtual(CUDNN_DATA_INT32, dims);
    Desc col = Virtual(CUDNN_DATA_INT32, dims);
    Pointwise(CUDNN_POINTWISE_GEN_INDEX, scores, nullptr, row, nullptr, 2);
    Pointwise(CUDNN_POINTWISE_GEN_INDEX, scores, nullptr, col, nullptr, 3);
    Desc keep = Virtual(CUDNN_DATA_BOOLEAN, dims);
    Pointwise(CUDNN_POINTWISE_CMP_GE, row, col, keep, nullptr, -1, CUDNN_DATA_BOOLEAN);
    Desc masked = Virtual(CUDNN_DATA_FLOAT, dims);
    Pointwise(CUDNN_POINTWISE_BINARY_SELECT, scores, neg_inf, masked, keep);
    return masked;
  }

  // Finalizes the graph and the first deterministic engine configuration that gives a plan.
  absl::StatusOr<Desc> BuildPlan(int64_t* workspace_bytes, std::string* engine) {
    if (!status_.ok()) return status_;
    Desc graph = Make(CUDNN_BACKEND_OPERATIONGRAPH_DESCRIPTOR);
    Set(graph, CUDNN_ATTR_OPERATIONGRAPH_HANDLE, CUDNN_TYPE_HANDLE, 1, &handle_, "graph handle");
    Set(graph, CUDNN_ATTR_OPERATIONGRAPH_OPS, CUDNN_TYPE_BACKEND_DESCRIPTOR, ops_.size(),
        ops_.data(), "graph ops");
    Finalize(graph, "operation graph");
    if (!status_.ok()) return status_;

    std::string tried = absl::StrCat(" (cuDNN ", cudnnGetVersion(), ")");
    for (cudnnBackendHeurMode_t mode :
         {CUDNN_HEUR_MODE_A, CUDNN_HEUR_MODE_B, CUDNN_HEUR_MODE_FALLBACK}) {
      Desc heur = Make(CUDNN_BACKEND_ENGINEHEUR_DESCRIPTOR);
      Set(heur, CUDNN_ATTR_ENGINEHEUR_OPERATION_GRAPH, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &graph,
          "heur graph");
      Set(heur, CUDNN_ATTR_ENGINEHEUR_MODE, CUDNN_TYPE_HEUR_MODE, 1, &mode, "heur mode");
      Finalize(heur, "heuristics");
      if (!status_.ok()) {
        absl::StrAppend(&tried, " heuristics mode ", mode, ": ", status_.message(), ";");
        status_ = absl::OkStatus();
        continue;
      }
      int64_t count = 0;
      const cudnnStatus_t cs = cudnnBackendGetAttribute(heur, CUDNN_ATTR_ENGINEHEUR_RESULTS,
                                                        CUDNN_TYPE_BACKEND_DESCRIPTOR, 0, &count,
                                                        nullptr);
      absl::StrAppend(&tried, " mode ", mode, ": ", count, " configs");
      if (cs != CUDNN_STATUS_SUCCESS) absl::StrAppend(&tried, " (", CudnnMessage(cs), ")");
      if (count <= 0) {
        absl::StrAppend(&tried, ";");
        continue;
      }
      std::vector<Desc> cfgs(count);
      for (Desc& c : cfgs) c = Make(CUDNN_BACKEND_ENGINECFG_DESCRIPTOR);
      int64_t got = 0;
      Check(cudnnBackendGetAttribute(heur, CUDNN_ATTR_ENGINEHEUR_RESULTS,
                                     CUDNN_TYPE_BACKEND_DESCRIPTOR, count, &got, cfgs.data()),
            "heuristic results");
      if (!status_.ok()) return status_;
      absl::StrAppend(&tried, ", ", got, " returned;");
      for (int64_t i = 0; i < got; ++i) {
        if (!Deterministic(cfgs[i])) {
          absl::StrAppend(&tried, " config ", i, " is non-deterministic;");
          continue;
        }
        Desc plan = nullptr;
        const cudnnStatus_t ps =
            cudnnBackendCreateDescriptor(CUDNN_BACKEND_EXECUTION_PLAN_DESCRIPTOR, &plan);
        if (ps != CUDNN_STATUS_SUCCESS) {
          absl::StrAppend(&tried, " config ", i, ": plan descriptor: ", CudnnMessage(ps), ";");
          continue;
        }
        cudnnBackendSetAttribute(plan, CUDNN_ATTR_EXECUTION_PLAN_HANDLE, CUDNN_TYPE_HANDLE, 1,
                                 &handle_);
        cudnnBackendSetAttribute(plan, CUDNN_ATTR_EXECUTION_PLAN_ENGINE_CONFIG,
                                 CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &cfgs[i]);
        const cudnnStatus_t fs = cudnnBackendFinalize(plan);
        if (fs != CUDNN_STATUS_SUCCESS) {
          absl::StrAppend(&tried, " config ", i, ": ", CudnnMessage(fs), ";");
          cudnnBackendDestroyDescriptor(plan);
          continue;
        }
        int64_t ws = 0, n = 0;
        cudnnBackendGetAttribute(plan, CUDNN_ATTR_EXECUTION_PLAN_WORKSPACE_SIZE,
                                 CUDNN_TYPE_INT64, 1, &n, &ws);
        *workspace_bytes = ws;
        *engine = absl::StrCat("engine ", EngineIndex(cfgs[i]), " (heuristics mode ", mode,
                               ", config ", i, " of ", got, ")");
        return plan;  // owned by the caller
      }
    }
    return absl::FailedPreconditionError(
        absl::StrCat("cuDNN has no deterministic engine for this attention graph:", tried));
  }

 private:
  // cuDNN's global index of the engine behind `cfg`, -1 when it cannot be read.
  int64_t EngineIndex(Desc cfg) {
    Desc engine = nullptr;
    if (cudnnBackendCreateDescriptor(CUDNN_BACKEND_ENGINE_DESCRIPTOR, &engine) !=
        CUDNN_STATUS_SUCCESS)
      return -1;
    owned_.push_back(engine);
    int64_t n = 0, index = -1;
    if (cudnnBackendGetAttribute(cfg, CUDNN_ATTR_ENGINECFG_ENGINE, CUDNN_TYPE_BACKEND_DESCRIPTOR,
                                 1, &n, &engine) != CUDNN_STATUS_SUCCESS ||
        cudnnBackendGetAttribute(engine, CUDNN_ATTR_ENGINE_GLOBAL_INDEX, CUDNN_TYPE_INT64, 1, &n,
                                 &index) != CUDNN_STATUS_SUCCESS)
      return -1;
    return index;
  }

  bool Deterministic(Desc cfg) {
    Desc engine = nullptr;
    if (cudnnBackendCreateDescriptor(CUDNN_BACKEND_ENGINE_DESCRIPTOR, &engine) !=
        CUDNN_STATUS_SUCCESS)
      return false;
    owned_.push_back(engine);
    int64_t n = 0;
    if (cudnnBackendGetAttribute(cfg, CUDNN_ATTR_ENGINECFG_ENGINE, CUDNN_TYPE_BACKEND_DESCRIPTOR,
                                 1, &n, &engine) != CUDNN_STATUS_SUCCESS)
      return true;  // notes unknown: the determinism test will tell
    cudnnBackendNumericalNote_t notes[CUDNN_NUMERICAL_NOTE_TYPE_COUNT];
    int64_t count = 0;
    if (cudnnBackendGetAttribute(engine, CUDNN_ATTR_ENGINE_NUMERICAL_NOTE,
                                 CUDNN_TYPE_NUMERICAL_NOTE, CUDNN_NUMERICAL_NOTE_TYPE_COUNT,
                                 &count, notes) != CUDNN_STATUS_SUCCESS)
      return true;
    for (int64_t i = 0; i < count; ++i)
      if (notes[i] == CUDNN_NUMERICAL_NOTE_NONDETERMINISTIC) return false;
    return true;
  }

  void Check(cudnnStatus_t s, const char* what) {
    if (s != CUDNN_STATUS_SUCCESS && status_.ok()) {
      status_ = absl::FailedPreconditionError(
          absl::StrCat("cuDNN attention graph: ", what, " failed: ", CudnnMessage(s)));
    }
  }

  cudnnHandle_t handle_;
  absl::Status status_;
  std::vector<Desc> owned_;
  std::vector<Desc> ops_;
  int64_t next_virtual_ = kFirstVirtual;
};

}  // namespace

struct CudnnAttention::Plan {
  Desc plan = nullptr;        // null when cuDNN refused the shape; `error` says why
  absl::Status error;
  int batch_chunk = 0;        // sequences per execution; the graph is built for this batch
  size_t plan_workspace = 0;  // cuDNN's own (for the backward it holds dS of one chunk)
  size_t row_sum_bytes = 0;   // backward only: rowsum(dO * O), FP32 [chunk, h, s]
  size_t dq_accum_bytes = 0;  // backward with BackwardDq::kAtomicAccumulator: FP32 dQ
  std::string engine;         // which cuDNN engine runs the plan
  size_t total() const {
    return AlignUp(plan_workspace) + AlignUp(row_sum_bytes) + AlignUp(dq_accum_bytes);
  }
  ~Plan() {
    if (plan) cudnnBackendDestroyDescriptor(plan);
  }
};

absl::StatusOr<std::unique_ptr<CudnnAttention>> CudnnAttention::Create(
    cudaStream_t stream, size_t ds_workspace_limit_bytes, BackwardDq dq) {
  cudnnHandle_t handle = nullptr;
  const cudnnStatus_t s = cudnnCreate(&handle);
  if (s != CUDNN_STATUS_SUCCESS) {
    return absl::FailedPreconditionError(absl::StrCat("cudnnCreate failed: ", CudnnMessage(s)));
  }
  cudnnSetStream(handle, stream);
  return std::unique_ptr<CudnnAttention>(
      new CudnnAttention(handle, ds_workspace_limit_bytes, dq));
}

CudnnAttention::CudnnAttention(cudnnHandle_t handle, size_t ds_workspace_limit_bytes,
                               BackwardDq dq)
    : handle_(handle), ds_budget_bytes_(ds_workspace_limit_bytes), dq_(dq) {}

CudnnAttention::~CudnnAttention() {
  plans_.clear();
  cudnnDestroy(handle_);
}

// Builds one plan. `ds_bf16` (backward only) rounds dS to BF16 before the dQ product; the
// frontend keeps it FP32, and some engines want both matmul operands in the I/O type, so the
// first attempt follows the frontend and the second rounds.
static absl::StatusOr<std::unique_ptr<CudnnAttention::Plan>> BuildAttentionPlan(
    cudnnHandle_t handle, const AttentionDims& d, bool backward, bool ds_bf16,
    CudnnAttention::BackwardDq dq_mode) {
  const int64_t b = d.batch, s = d.seq_len, h = d.n_head, hk = d.n_kv_head, hd = d.head_dim;
  const int64_t qs = d.qkv_stride;
  GraphBuilder g(handle);
  const cudnnDataType_t bf16 = CUDNN_DATA_BFLOAT16, f32 = CUDNN_DATA_FLOAT;
  const std::vector<int64_t> scalar{1, 1, 1, 1};
  const std::vector<int64_t> qkv_rows{s * qs, hd, qs, 1};       // [b, heads, s, hd] in QKV rows
  const std::vector<int64_t> qkv_rows_t{s * qs, hd, 1, qs};     // [b, heads, hd, s]: transposed
  const std::vector<int64_t> out_rows{s * h * hd, hd, h * hd, 1};
  const std::vector<int64_t> stats_strides{h * s, s, 1, 1};
  const std::vector<int64_t> scores{b, h, s, s};
  const std::vector<int64_t> stats{b, h, s, 1};

  Desc q = g.Tensor(bf16, {b, h, s, hd}, qkv_rows, kQ);
  Desc kt = g.Tensor(bf16, {b, hk, hd, s}, qkv_rows_t, kK);
  Desc lse = g.Tensor(f32, stats, stats_strides, kLse);
  Desc scale = g.Tensor(f32, scalar, scalar, kScale, /*by_value=*/true);
  Desc neg_inf = g.Tensor(f32, scalar, scalar, kNegInf, /*by_value=*/true);

  // S = Q K^T * scale, causal.
  Desc s_raw = g.Virtual(f32, scores);
  g.Matmul(q, kt, s_raw);
  Desc s_scaled = g.Virtual(f32, scores);
  g.Pointwise(CUDNN_POINTWISE_MUL, s_raw, scale, s_scaled);
  Desc s_masked = g.CausalMask(s_scaled, scores, neg_inf);

  auto plan = std::make_unique<CudnnAttention::Plan>();
  if (!backward) {
    Desc v = g.Tensor(bf16, {b, hk, s, hd}, qkv_rows, kV);
    Desc o = g.Tensor(bf16, {b, h, s, hd}, out_rows, kO);
    Desc max = g.Virtual(f32, stats);
    g.Reduction(CUDNN_REDUCE_TENSOR_MAX, s_masked, max);
    Desc centred = g.Virtual(f32, scores);
    g.Pointwise(CUDNN_POINTWISE_SUB, s_masked, max, centred);
    Desc e = g.Virtual(f32, scores);
    g.Pointwise(CUDNN_POINTWISE_EXP, centred, nullptr, e);
    Desc z = g.Virtual(f32, stats);
    g.Reduction(CUDNN_REDUCE_TENSOR_ADD, e, z);
    Desc log_z = g.Virtual(f32, stats);
    g.Pointwise(CUDNN_POINTWISE_LOG, z, nullptr, log_z);
    g.Pointwise(CUDNN_POINTWISE_ADD, max, log_z, lse);
    // The engines take the probabilities into the second product in the I/O type.
    Desc p = g.Virtual(bf16, scores);
    g.Pointwise(CUDNN_POINTWISE_DIV, e, z, p);
    g.Matmul(p, v, o);
  } else {
    Desc vt = g.Tensor(bf16, {b, hk, hd, s}, qkv_rows_t, kV);
    Desc o = g.Tensor(bf16, {b, h, s, hd}, out_rows, kO);
    Desc d_o = g.Tensor(bf16, {b, h, s, hd}, out_rows, kDO);
    Desc dq = g.Tensor(bf16, {b, h, s, hd}, qkv_rows, kDQ);
    Desc dk = g.Tensor(bf16, {b, hk, s, hd}, qkv_rows, kDK);
    Desc dv = g.Tensor(bf16, {b, hk, s, hd}, qkv_rows, kDV);
    Desc row_sum = g.Tensor(f32, stats, stats_strides, kRowSum);
    plan->row_sum_bytes = static_cast<size_t>(b * h * s) * sizeof(float);

    // rowsum(dO * O), the softmax backward's correction term. The sum must be a virtual tensor
    // whose product with the dropout scale (1 here) is the stored one, as in cudnn-frontend:
    // with the reduction written straight into the stored tensor, cuDNN 9.19's fused engine
    // (engine 6 on H100) still accepts the graph but its dQ and dK are wrong (relative error
    // 0.6 to 0.8 at head_dim 64 and 128, dV exact; measured 2026-11-22).
    Desc one = g.Tensor(f32, scalar, scalar, kOne, /*by_value=*/true);
    Desc do_o = g.Virtual(f32, {b, h, s, hd});
    g.Pointwise(CUDNN_POINTWISE_MUL, d_o, o, do_o);
    Desc row_sum_raw = g.Tensor(f32, stats, stats_strides);
    g.Reduction(CUDNN_REDUCE_TENSOR_ADD, do_o, row_sum_raw);
    g.Pointwise(CUDNN_POINTWISE_MUL, row_sum_raw, one, row_sum);
    // P = exp(S - LSE), recomputed from the forward's statistics.
    Desc centred = g.Virtual(f32, scores);
    g.Pointwise(CUDNN_POINTWISE_SUB, s_masked, lse, centred);
    Desc p = g.Virtual(f32, scores);
    g.Pointwise(CUDNN_POINTWISE_EXP, centred, nullptr, p);
    // dV = P^T dO (summed over the query heads of a KV group when GQA).
    const std::vector<int64_t> transposed{h * s * s, s * s, 1, s};
    Desc pt = g.Tensor(bf16, scores, transposed);
    g.Reshape(p, pt);
    if (h == hk) {
      g.Matmul(pt, d_o, dv);
    } else {
      Desc dv_full = g.Virtual(bf16, {b, h, s, hd});
      g.Matmul(pt, d_o, dv_full);
      g.Reduction(CUDNN_REDUCE_TENSOR_ADD, dv_full, dv);
    }
    // dS = P * (dO V^T - rowsum) * scale.
    Desc dp = g.Virtual(f32, scores);
    g.Matmul(d_o, vt, dp);
    Desc dp_centred = g.Virtual(f32, scores);
    g.Pointwise(CUDNN_POINTWISE_SUB, dp, row_sum, dp_centred);
    Desc ds_raw = g.Virtual(f32, scores);
    g.Pointwise(CUDNN_POINTWISE_MUL, dp_centred, p, ds_raw);
    Desc ds = g.Virtual(ds_bf16 ? bf16 : f32, scores);
    g.Pointwise(CUDNN_POINTWISE_MUL, ds_raw, scale, ds);
    // dK = dS^T Q.
    Desc dst = g.Tensor(bf16, scores, transposed);
    g.Reshape(ds, dst);
    if (h == hk) {
      g.Matmul(dst, q, dk);
    } else {
      Desc dk_full = g.Virtual(bf16, {b, h, s, hd});
      g.Matmul(dst, q, dk_full);
      g.Reduction(CUDNN_REDUCE_TENSOR_ADD, dk_full, dk);
    }
    // dQ = dS K straight into dQ. With an FP32 dQ accumulator in the graph instead, cuDNN's
    // fused engine adds each key block's dS K into it with atomics in whatever order the blocks
    // finish: two runs of the 124m preset (B16 x T1024) drifted apart from the third step on an
    // H200 (2026-12-04). Without the accumulator the engine keeps dS in its workspace and
    // computes dQ in a separate, ordered pass (cudnn-frontend builds this form when asked for a
    // deterministic backward on Hopper), so the workspace grows by chunk x h x s^2 BF16 values.
    Desc k = g.Tensor(bf16, {b, hk, s, hd}, qkv_rows);
    g.Reshape(kt, k);
    if (dq_mode == CudnnAttention::BackwardDq::kOrdered) {
      g.Matmul(ds, k, dq);
    } else {
      Desc dq_accum = g.Tensor(f32, {b, h, s, hd}, {h * s * hd, s * hd, hd, 1}, kDQAccum);
      plan->dq_accum_bytes = static_cast<size_t>(b * h * s * hd) * sizeof(float);
      g.Matmul(ds, k, dq_accum);
      g.Pointwise(CUDNN_POINTWISE_IDENTITY, dq_accum, nullptr, dq);
    }
  }
  int64_t ws = 0;
  absl::StatusOr<Desc> built = g.BuildPlan(&ws, &plan->engine);
  if (!built.ok()) return built.status();
  plan->plan = *built;
  plan->plan_workspace = static_cast<size_t>(ws);
  return plan;
}

// BF16 dS values of `chunk` sequences, as cuDNN pads them (to 64 x 64 tiles) in its workspace.
static size_t DsWorkspaceBytes(const AttentionDims& d, int chunk) {
  const size_t s = (static_cast<size_t>(d.seq_len) + 63) / 64 * 64;
  return static_cast<size_t>(chunk) * static_cast<size_t>(d.n_head) * s * s * 2;
}

int CudnnAttention::BackwardBatchChunk(const AttentionDims& d) const {
  for (int c = d.batch; c > 1; --c) {
    if (d.batch % c == 0 && DsWorkspaceBytes(d, c) <= ds_budget_bytes_) return c;
  }
  return 1;
}

absl::StatusOr<CudnnAttention::Plan*> CudnnAttention::GetPlan(const AttentionDims& d,
                                                              bool backward) {
  const AttentionGraphKey key{d.batch,    d.seq_len,    d.n_head, d.n_kv_head,
                              d.head_dim, d.qkv_stride, backward};
  if (auto it = plans_.find(key); it != plans_.end()) {
    // A shape cuDNN refused stays refused: its error is cached, not rebuilt every call.
    if (it->second->plan == nullptr) return it->second->error;
    return it->second.get();
  }
  // The backward runs `chunk` sequences at a time so that dS in cuDNN's workspace stays within
  // the budget; sequences are independent, so the chunks compute what one call would.
  AttentionDims graph_dims = d;
  if (backward && dq_ == BackwardDq::kOrdered) graph_dims.batch = BackwardBatchChunk(d);
  std::string errors;
  for (const bool ds_bf16 : backward ? std::vector<bool>{false, true} : std::vector<bool>{false}) {
    absl::StatusOr<std::unique_ptr<Plan>> plan =
        BuildAttentionPlan(handle_, graph_dims, backward, ds_bf16, dq_);
    if (plan.ok()) {
      Plan* raw = plan->get();
      raw->batch_chunk = graph_dims.batch;
      plans_.emplace(key, std::move(*plan));
      return raw;
    }
    absl::StrAppend(&errors, errors.empty() ? "" : " | then with dS in BF16: ",
                    plan.status().message());
  }
  auto failed = std::make_unique<Plan>();
  failed->error = absl::FailedPreconditionError(
      absl::StrCat(backward ? "backward: " : "forward: ", errors));
  const absl::Status error = failed->error;
  plans_.emplace(key, std::move(failed));
  return error;
}

absl::StatusOr<size_t> CudnnAttention::Prepare(const AttentionDims& dims) {
  // Smaller shapes later must fit the workspace planned here: their chunks may hold at most as
  // many dS bytes as this shape's.
  ds_budget_bytes_ = DsWorkspaceBytes(dims, BackwardBatchChunk(dims));
  absl::StatusOr<Plan*> fwd = GetPlan(dims, false);
  if (!fwd.ok()) return fwd.status();
  absl::StatusOr<Plan*> bwd = GetPlan(dims, true);
  if (!bwd.ok()) return (*fwd)->total();
  return std::max((*fwd)->total(), (*bwd)->total());
}

absl::Status CudnnAttention::BackwardStatus(const AttentionDims& dims) {
  absl::StatusOr<Plan*> bwd = GetPlan(dims, true);
  return bwd.ok() ? absl::OkStatus() : bwd.status();
}

namespace {

absl::Status Execute(cudnnHandle_t handle, Desc plan, const std::vector<int64_t>& uids,
                     const std::vector<void*>& ptrs, void* workspace) {
  Desc pack = nullptr;
  cudnnStatus_t s = cudnnBackendCreateDescriptor(CUDNN_BACKEND_VARIANT_PACK_DESCRIPTOR, &pack);
  if (s == CUDNN_STATUS_SUCCESS) {
    cudnnBackendSetAttribute(pack, CUDNN_ATTR_VARIANT_PACK_UNIQUE_IDS, CUDNN_TYPE_INT64,
                             uids.size(), uids.data());
    cudnnBackendSetAttribute(pack, CUDNN_ATTR_VARIANT_PACK_DATA_POINTERS, CUDNN_TYPE_VOID_PTR,
                             ptrs.size(), ptrs.data());
    cudnnBackendSetAttribute(pack, CUDNN_ATTR_VARIANT_PACK_WORKSPACE, CUDNN_TYPE_VOID_PTR, 1,
                             &workspace);
    s = cudnnBackendFinalize(pack);
    if (s == CUDNN_STATUS_SUCCESS) s = cudnnBackendExecute(handle, plan, pack);
  }
  if (pack != nullptr) cudnnBackendDestroyDescriptor(pack);
  if (s != CUDNN_STATUS_SUCCESS) {
    return absl::InternalError(absl::StrCat("cuDNN attention execute failed: ", CudnnMessage(s)));
  }
  return absl::OkStatus();
}

}  // namespace

absl::Status CudnnAttention::Forward(__nv_bfloat16* out, float* lse, const __nv_bfloat16* q,
                                     const __nv_bfloat16* k, const __nv_bfloat16* v,
                                     const AttentionDims& dims, void* workspace,
                                     size_t workspace_bytes) {
  absl::StatusOr<Plan*> plan = GetPlan(dims, false);
  if (!plan.ok()) return plan.status();
  if ((*plan)->total() > workspace_bytes) {
    return absl::ResourceExhaustedError(absl::StrCat("cuDNN attention forward needs ",
                                                     (*plan)->total(), " workspace bytes, has ",
                                                     workspace_bytes));
  }
  float scale = 1.f / std::sqrt(static_cast<float>(dims.head_dim));
  float neg_inf = -std::numeric_limits<float>::infinity();
  return Execute(handle_, (*plan)->plan, {kQ, kK, kV, kO, kLse, kScale, kNegInf},
                 {const_cast<__nv_bfloat16*>(q), const_cast<__nv_bfloat16*>(k),
                  const_cast<__nv_bfloat16*>(v), out, lse, &scale, &neg_inf},
                 workspace);
}

absl::Status CudnnAttention::Backward(__nv_bfloat16* dq, __nv_bfloat16* dk, __nv_bfloat16* dv,
                                      const __nv_bfloat16* dout, const __nv_bfloat16* q,
                                      const __nv_bfloat16* k, const __nv_bfloat16* v,
                                      const __nv_bfloat16* out, const float* lse,
                                      const AttentionDims& dims, void* workspace,
                                      size_t workspace_bytes) {
  absl::StatusOr<Plan*> plan = GetPlan(dims, true);
  if (!plan.ok()) return plan.status();
  const Plan& p = **plan;
  if (p.total() > workspace_bytes) {
    return absl::ResourceExhaustedError(absl::StrCat("cuDNN attention backward needs ", p.total(),
                                                     " workspace bytes, has ", workspace_bytes));
  }
  char* base = static_cast<char*>(workspace);
  char* row_sum = base + AlignUp(p.plan_workspace);
  char* dq_accum = row_sum + AlignUp(p.row_sum_bytes);
  if (p.dq_accum_bytes > 0) {
    cudaStream_t stream = nullptr;
    cudnnGetStream(handle_, &stream);
    if (cudaMemsetAsync(dq_accum, 0, p.dq_accum_bytes, stream) != cudaSuccess) {
      return absl::InternalError("cudaMemsetAsync of the dQ accumulator failed");
    }
  }
  float scale = 1.f / std::sqrt(static_cast<float>(dims.head_dim));
  float neg_inf = -std::numeric_limits<float>::infinity();
  float one = 1.f;
  // Offsets of one chunk of sequences: QKV-layout rows, output rows, [b, h, s] statistics.
  const int64_t chunk = p.batch_chunk;
  const int64_t qkv_step = chunk * dims.seq_len * dims.qkv_stride;
  const int64_t out_step = chunk * dims.seq_len * int64_t{dims.n_head} * dims.head_dim;
  const int64_t lse_step = chunk * dims.n_head * int64_t{dims.seq_len};
  for (int64_t c = 0; c < dims.batch / chunk; ++c) {
    const int64_t qo = c * qkv_step, oo = c * out_step, lo = c * lse_step;
    std::vector<int64_t> uids = {kQ,  kK,  kV,  kO,  kLse,    kScale, kNegInf,
                                 kDO, kDQ, kDK, kDV, kRowSum, kOne};
    std::vector<void*> ptrs = {
        const_cast<__nv_bfloat16*>(q + qo),    const_cast<__nv_bfloat16*>(k + qo),
        const_cast<__nv_bfloat16*>(v + qo),    const_cast<__nv_bfloat16*>(out + oo),
        const_cast<float*>(lse + lo),          &scale,
        &neg_inf,                              const_cast<__nv_bfloat16*>(dout + oo),
        dq + qo,                               dk + qo,
        dv + qo,                               row_sum,
        &one};
    if (p.dq_accum_bytes > 0) {
      uids.push_back(kDQAccum);
      ptrs.push_back(dq_accum);
    }
    absl::Status s = Execute(handle_, p.plan, uids, ptrs, base);
    if (!s.ok()) return s;
  }
  return absl::OkStatus();
}

std::string CudnnAttention::PlanDescription(const AttentionDims& dims, bool backward) {
  absl::StatusOr<Plan*> plan = GetPlan(dims, backward);
  if (!plan.ok()) return std::string(plan.status().message());
  const Plan& p = **plan;
  return absl::StrCat(p.engine, ", ", p.batch_chunk, " of ", dims.batch, " sequences a call, ",
                      p.total() >> 20, " MiB workspace");
}

}  // namespace fp8d::kernels
