#include "kernels/gemm.h"

#include "absl/strings/str_cat.h"

namespace fp8d::kernels {
namespace {

// cuBLASLt's status names. cublasGetStatusName lives in libcublas, which the engine does not
// otherwise need, so the few codes cuBLASLt returns are named here.
const char* LtStatusName(cublasStatus_t s) {
  switch (s) {
    case CUBLAS_STATUS_SUCCESS: return "CUBLAS_STATUS_SUCCESS";
    case CUBLAS_STATUS_NOT_INITIALIZED: return "CUBLAS_STATUS_NOT_INITIALIZED";
    case CUBLAS_STATUS_ALLOC_FAILED: return "CUBLAS_STATUS_ALLOC_FAILED";
    case CUBLAS_STATUS_INVALID_VALUE: return "CUBLAS_STATUS_INVALID_VALUE";
    case CUBLAS_STATUS_ARCH_MISMATCH: return "CUBLAS_STATUS_ARCH_MISMATCH";
    case CUBLAS_STATUS_MAPPING_ERROR: return "CUBLAS_STATUS_MAPPING_ERROR";
    case CUBLAS_STATUS_EXECUTION_FAILED: return "CUBLAS_STATUS_EXECUTION_FAILED";
    case CUBLAS_STATUS_INTERNAL_ERROR: return "CUBLAS_STATUS_INTERNAL_ERROR";
    case CUBLAS_STATUS_NOT_SUPPORTED: return "CUBLAS_STATUS_NOT_SUPPORTED";
    case CUBLAS_STATUS_LICENSE_ERROR: return "CUBLAS_STATUS_LICENSE_ERROR";
    default: return "unknown cuBLAS status";
  }
}

absl::Status LtError(const char* expr, cublasStatus_t s) {
  const std::string msg = absl::StrCat(expr, " failed: ", LtStatusName(s));
  if (s == CUBLAS_STATUS_ALLOC_FAILED) return absl::ResourceExhaustedError(msg);
  if (s == CUBLAS_STATUS_NOT_SUPPORTED || s == CUBLAS_STATUS_ARCH_MISMATCH) {
    return absl::FailedPreconditionError(msg);
  }
  return absl::InternalError(msg);
}

#define LT_RETURN_IF_ERROR(expr)                                                 \
  do {                                                                           \
    const cublasStatus_t lt_status_ = (expr);                                    \
    if (lt_status_ != CUBLAS_STATUS_SUCCESS) return LtError(#expr, lt_status_);  \
  } while (0)

bool IsFp8(cudaDataType_t t) { return t == CUDA_R_8F_E4M3 || t == CUDA_R_8F_E5M2; }

}  // namespace

GemmDesc GemmDesc::From(const GemmConfig& c, const GemmShape& s) {
  return GemmDesc{s.m,
                  s.n,
                  s.k,
                  c.trans_a,
                  c.trans_b,
                  static_cast<int>(c.a_type),
                  static_cast<int>(c.b_type),
                  static_cast<int>(c.c_type),
                  static_cast<int>(c.compute_type),
                  static_cast<int>(c.scale_type),
                  static_cast<int>(c.epilogue),
                  c.beta != 0.f,
                  c.fast_accum,
                  c.a_scale != nullptr || c.b_scale != nullptr || c.d_scale != nullptr,
                  c.lda,
                  c.ldb,
                  c.ldd};
}

struct GemmRunner::Plan {
  cublasLtMatmulDesc_t op = nullptr;
  cublasLtMatrixLayout_t first = nullptr;   // cuBLASLt's A: our B
  cublasLtMatrixLayout_t second = nullptr;  // cuBLASLt's B: our A
  cublasLtMatrixLayout_t out = nullptr;
  cublasLtMatmulAlgo_t algo{};

  ~Plan() {
    if (op) cublasLtMatmulDescDestroy(op);
    if (first) cublasLtMatrixLayoutDestroy(first);
    if (second) cublasLtMatrixLayoutDestroy(second);
    if (out) cublasLtMatrixLayoutDestroy(out);
  }
};

absl::StatusOr<std::unique_ptr<GemmRunner>> GemmRunner::Create(void* workspace,
                                                               size_t workspace_bytes) {
  cublasLtHandle_t handle = nullptr;
  LT_RETURN_IF_ERROR(cublasLtCreate(&handle));
  return std::unique_ptr<GemmRunner>(new GemmRunner(handle, workspace, workspace_bytes));
}

GemmRunner::GemmRunner(cublasLtHandle_t handle, void* workspace, size_t workspace_bytes)
    : handle_(handle), workspace_(workspace), workspace_bytes_(workspace_bytes) {}

GemmRunner::~GemmRunner() {
  plans_.clear();
  cublasLtDestroy(handle_);
}

absl::StatusOr<const GemmRunner::Plan*> GemmRunner::GetPlan(const GemmConfig& c,
                                                            const GemmShape& s) {
  const GemmDesc key = GemmDesc::From(c, s);
  if (auto it = plans_.find(key); it != plans_.end()) return it->second.get();
  if (s.m <= 0 || s.n <= 0 || s.k <= 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("GEMM shape m=", s.m, " n=", s.n, " k=", s.k, " must be positive"));
  }

  // A row-major operand's stride is the column-major leading dimension cuBLASLt wants; it must
  // cover a row.
  const int64_t a_cols = c.trans_a ? s.m : s.k, b_cols = c.trans_b ? s.k : s.n;
  if ((c.lda != 0 && c.lda < a_cols) || (c.ldb != 0 && c.ldb < b_cols) ||
      (c.ldd != 0 && c.ldd < s.n)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "GEMM row strides lda=", c.lda, " ldb=", c.ldb, " ldd=", c.ldd,
        " must be 0 (dense) or at least the rows' lengths ", a_cols, ", ", b_cols, ", ", s.n));
  }

  auto plan = std::make_unique<Plan>();
  LT_RETURN_IF_ERROR(cublasLtMatmulDescCreate(&plan->op, c.compute_type, c.scale_type));
  // Column-major view: D^T[n, m] = op(B)^T[n, k] * op(A)^T[k, m]. A row-major [r, c] matrix is a
  // column-major [c, r] one, so B stored [k, n] is already op(B)^T (no transpose) and B stored
  // [n, k] (trans_b) needs cuBLASLt's transpose; likewise for A.
  const cublasOperation_t op_first = c.trans_b ? CUBLAS_OP_T : CUBLAS_OP_N;
  const cublasOperation_t op_second = c.trans_a ? CUBLAS_OP_T : CUBLAS_OP_N;
  LT_RETURN_IF_ERROR(cublasLtMatmulDescSetAttribute(
                                            plan->op, CUBLASLT_MATMUL_DESC_TRANSA, &op_first,
                                            sizeof(op_first)));
  LT_RETURN_IF_ERROR(cublasLtMatmulDescSetAttribute(
                                            plan->op, CUBLASLT_MATMUL_DESC_TRANSB, &op_second,
                                            sizeof(op_second)));
  LT_RETURN_IF_ERROR(cublasLtMatmulDescSetAttribute(
                                              plan->op, CUBLASLT_MATMUL_DESC_EPILOGUE,
                                              &c.epilogue, sizeof(c.epilogue)));
  if (IsFp8(c.a_type) || IsFp8(c.b_type)) {
    const int8_t fast = c.fast_accum ? 1 : 0;
    LT_RETURN_IF_ERROR(cublasLtMatmulDescSetAttribute(
                                plan->op, CUBLASLT_MATMUL_DESC_FAST_ACCUM, &fast, sizeof(fast)));
  }

  const uint64_t first_rows = c.trans_b ? s.k : s.n, first_cols = c.trans_b ? s.n : s.k;
  const uint64_t second_rows = c.trans_a ? s.m : s.k, second_cols = c.trans_a ? s.k : s.m;
  const uint64_t ld_first = c.ldb != 0 ? static_cast<uint64_t>(c.ldb) : first_rows;
  const uint64_t ld_second = c.lda != 0 ? static_cast<uint64_t>(c.lda) : second_rows;
  const uint64_t ld_out = c.ldd != 0 ? static_cast<uint64_t>(c.ldd) : static_cast<uint64_t>(s.n);
  LT_RETURN_IF_ERROR(cublasLtMatrixLayoutCreate(&plan->first, c.b_type, first_rows, first_cols,
                                                ld_first));
  LT_RETURN_IF_ERROR(cublasLtMatrixLayoutCreate(&plan->second, c.a_type, second_rows,
                                                second_cols, ld_second));
  LT_RETURN_IF_ERROR(cublasLtMatrixLayoutCreate(&plan->out, c.c_type, s.n, s.m, ld_out));

  cublasLtMatmulPreference_t pref = nullptr;
  LT_RETURN_IF_ERROR(cublasLtMatmulPreferenceCreate(&pref));
  const uint64_t ws = workspace_bytes_;
  cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &ws,
                                       sizeof(ws));
  cublasLtMatmulHeuristicResult_t result{};
  int found = 0;
  const cublasStatus_t hs = cublasLtMatmulAlgoGetHeuristic(
      handle_, plan->op, plan->first, plan->second, plan->out, plan->out, pref, 1, &result,
      &found);
  cublasLtMatmulPreferenceDestroy(pref);
  if (hs != CUBLAS_STATUS_SUCCESS || found == 0) {
    return absl::InternalError(absl::StrCat(
        "cuBLASLt has no algorithm for m=", s.m, " n=", s.n, " k=", s.k,
        " trans_a=", c.trans_a, " trans_b=", c.trans_b, " types a=", c.a_type, " b=", c.b_type,
        " d=", c.c_type, ": ", LtStatusName(hs)));
  }
  plan->algo = result.algo;
  const Plan* raw = plan.get();
  plans_.emplace(key, std::move(plan));
  return raw;
}

absl::Status GemmRunner::Run(const GemmConfig& c, const GemmShape& s, const void* a,
                             const void* b, void* d, cudaStream_t stream, const void* c_ptr) {
  absl::StatusOr<const Plan*> plan = GetPlan(c, s);
  if (!plan.ok()) return plan.status();
  const Plan& p = **plan;
  // Scale pointers change per call (each tensor has its own), so they are set on the cached
  // descriptor right before the launch; the engine runs GEMMs from one thread.
  if (c.a_scale != nullptr || c.b_scale != nullptr || c.d_scale != nullptr) {
    // Our A is cuBLASLt's B and vice versa.
    cublasLtMatmulDescSetAttribute(p.op, CUBLASLT_MATMUL_DESC_A_SCALE_POINTER, &c.b_scale,
                                   sizeof(c.b_scale));
    cublasLtMatmulDescSetAttribute(p.op, CUBLASLT_MATMUL_DESC_B_SCALE_POINTER, &c.a_scale,
                                   sizeof(c.a_scale));
    cublasLtMatmulDescSetAttribute(p.op, CUBLASLT_MATMUL_DESC_D_SCALE_POINTER, &c.d_scale,
                                   sizeof(c.d_scale));
  }
  const void* c_in = c_ptr != nullptr ? c_ptr : d;
  LT_RETURN_IF_ERROR(cublasLtMatmul(handle_, p.op, &c.alpha, b, p.first, a, p.second, &c.beta,
                                    c_in, p.out, d, p.out, &p.algo, workspace_, workspace_bytes_,
                                    stream));
  return absl::OkStatus();
}

}  // namespace fp8d::kernels
