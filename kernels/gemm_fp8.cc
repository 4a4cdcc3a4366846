#include "kernels/gemm_fp8.h"

#include <string>

#include "absl/strings/str_cat.h"
#include "kernels/cuda_check.h"

namespace fp8d::kernels {
namespace {

bool IsFp8(cudaDataType_t t) { return t == CUDA_R_8F_E4M3 || t == CUDA_R_8F_E5M2; }

const char* TypeName(cudaDataType_t t) {
  switch (t) {
    case CUDA_R_8F_E4M3: return "E4M3";
    case CUDA_R_8F_E5M2: return "E5M2";
    case CUDA_R_16BF: return "BF16";
    case CUDA_R_32F: return "FP32";
    default: return "unsupported";
  }
}

const char* ScaleModeName(Fp8ScaleMode mode) {
  switch (mode) {
    case Fp8ScaleMode::kTensor: return "tensor (SCALAR_32F)";
    case Fp8ScaleMode::kRowwise: return "rowwise (OUTER_VEC_32F)";
    case Fp8ScaleMode::kBlock1x128: return "1x128 (VEC128_32F)";
    case Fp8ScaleMode::kBlock128x128: return "128x128 (W BLK128x128_32F, X VEC128_32F)";
  }
  return "unsupported";
}

// The scale mode of W (cuBLASLt's A) and of X (its B); they differ only for 128x128 weight tiles,
// where the activations keep 1x128 blocks.
cublasLtMatmulMatrixScale_t LtWeightScaleMode(Fp8ScaleMode mode) {
  switch (mode) {
    case Fp8ScaleMode::kRowwise: return CUBLASLT_MATMUL_MATRIX_SCALE_OUTER_VEC_32F;
    case Fp8ScaleMode::kBlock1x128: return CUBLASLT_MATMUL_MATRIX_SCALE_VEC128_32F;
    case Fp8ScaleMode::kBlock128x128: return CUBLASLT_MATMUL_MATRIX_SCALE_BLK128x128_32F;
    case Fp8ScaleMode::kTensor: break;
  }
  return CUBLASLT_MATMUL_MATRIX_SCALE_SCALAR_32F;
}

cublasLtMatmulMatrixScale_t LtActivationScaleMode(Fp8ScaleMode mode) {
  return mode == Fp8ScaleMode::kBlock128x128 ? CUBLASLT_MATMUL_MATRIX_SCALE_VEC128_32F
                                              : LtWeightScaleMode(mode);
}

absl::Status Validate(const Fp8GemmConfig& c, const GemmShape& s) {
  if (!IsFp8(c.x_type) || !IsFp8(c.w_type)) {
    return absl::InvalidArgumentError(absl::StrCat("FP8 GEMM x_type ", TypeName(c.x_type),
                                                   " / w_type ", TypeName(c.w_type),
                                                   ": each must be E4M3 or E5M2"));
  }
  if (c.x_type == CUDA_R_8F_E5M2 && c.w_type == CUDA_R_8F_E5M2) {
    return absl::InvalidArgumentError(
        "FP8 GEMM x_type and w_type are both E5M2: at least one must be E4M3");
  }
  if (c.out_type != CUDA_R_16BF && c.out_type != CUDA_R_32F) {
    return absl::InvalidArgumentError(absl::StrCat(
        "FP8 GEMM out_type ", TypeName(c.out_type), ": must be BF16 or FP32"));
  }
  if (s.m <= 0 || s.n <= 0 || s.k <= 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("FP8 GEMM shape m=", s.m, " n=", s.n, " k=", s.k, " must be positive"));
  }
  // FP8 tensor cores read X and W rows of k bytes 16 bytes at a time; Y rows of n BF16 or FP32
  // values must stay 16-byte aligned too.
  if (s.k % 16 != 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("FP8 GEMM shape k=", s.k, ": must be a multiple of 16"));
  }
  if (s.n % 8 != 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("FP8 GEMM shape n=", s.n, ": must be a multiple of 8"));
  }
  if (c.x_scale_inv == nullptr || c.w_scale_inv == nullptr) {
    return absl::InvalidArgumentError("FP8 GEMM x_scale_inv and w_scale_inv are required");
  }
  return absl::OkStatus();
}

}  // namespace

Fp8GemmDesc Fp8GemmDesc::From(const Fp8GemmConfig& c, const GemmShape& s) {
  return Fp8GemmDesc{s.m,
                     s.n,
                     s.k,
                     static_cast<int>(c.x_type),
                     static_cast<int>(c.w_type),
                     static_cast<int>(c.out_type),
                     static_cast<int>(c.scale_mode),
                     c.fast_accum,
                     c.accumulate};
}

struct Fp8GemmRunner::Plan {
  cublasLtMatmulDesc_t op = nullptr;
  cublasLtMatrixLayout_t w_layout = nullptr;  // cuBLASLt's A
  cublasLtMatrixLayout_t x_layout = nullptr;  // cuBLASLt's B
  cublasLtMatrixLayout_t y_layout = nullptr;  // C and D
  cublasLtMatmulAlgo_t algo{};

  ~Plan() {
    if (op) cublasLtMatmulDescDestroy(op);
    if (w_layout) cublasLtMatrixLayoutDestroy(w_layout);
    if (x_layout) cublasLtMatrixLayoutDestroy(x_layout);
    if (y_layout) cublasLtMatrixLayoutDestroy(y_layout);
  }
};

absl::StatusOr<std::unique_ptr<Fp8GemmRunner>> Fp8GemmRunner::Create(void* workspace,
                                                                     size_t workspace_bytes) {
  cublasLtHandle_t handle = nullptr;
  CUBLAS_RETURN_IF_ERROR(cublasLtCreate(&handle));
  return std::unique_ptr<Fp8GemmRunner>(new Fp8GemmRunner(handle, workspace, workspace_bytes));
}

Fp8GemmRunner::Fp8GemmRunner(cublasLtHandle_t handle, void* workspace, size_t workspace_bytes)
    : handle_(handle), workspace_(workspace), workspace_bytes_(workspace_bytes) {}

Fp8GemmRunner::~Fp8GemmRunner() {
  for (TimedCall& t : timed_) {
    cudaEventDestroy(t.start);
    cudaEventDestroy(t.end);
  }
  plans_.clear();
  cublasLtDestroy(handle_);
}

absl::StatusOr<const Fp8GemmRunner::Plan*> Fp8GemmRunner::GetPlan(const Fp8GemmConfig& c,
                                                                  const GemmShape& s) {
  const Fp8GemmDesc key = Fp8GemmDesc::From(c, s);
  if (auto it = plans_.find(key); it != plans_.end()) return it->second.get();

  auto plan = std::make_unique<Plan>();
  CUBLAS_RETURN_IF_ERROR(cublasLtMatmulDescCreate(&plan->op, CUBLAS_COMPUTE_32F, CUDA_R_32F));
  // TN: see the header for why cuBLASLt's A is W (transposed) and its B is X.
  const cublasOperation_t trans_a = CUBLAS_OP_T, trans_b = CUBLAS_OP_N;
  CUBLAS_RETURN_IF_ERROR(cublasLtMatmulDescSetAttribute(plan->op, CUBLASLT_MATMUL_DESC_TRANSA,
                                                        &trans_a, sizeof(trans_a)));
  CUBLAS_RETURN_IF_ERROR(cublasLtMatmulDescSetAttribute(plan->op, CUBLASLT_MATMUL_DESC_TRANSB,
                                                        &trans_b, sizeof(trans_b)));
  const int8_t fast = c.fast_accum ? 1 : 0;
  CUBLAS_RETURN_IF_ERROR(cublasLtMatmulDescSetAttribute(plan->op, CUBLASLT_MATMUL_DESC_FAST_ACCUM,
                                                        &fast, sizeof(fast)));
  if (c.scale_mode != Fp8ScaleMode::kTensor) {
    // The mode changes which kernels qualify, so it is set before the heuristic runs.
    const int32_t w_mode = static_cast<int32_t>(LtWeightScaleMode(c.scale_mode));
    const int32_t x_mode = static_cast<int32_t>(LtActivationScaleMode(c.scale_mode));
    CUBLAS_RETURN_IF_ERROR(cublasLtMatmulDescSetAttribute(
        plan->op, CUBLASLT_MATMUL_DESC_A_SCALE_MODE, &w_mode, sizeof(w_mode)));
    CUBLAS_RETURN_IF_ERROR(cublasLtMatmulDescSetAttribute(
        plan->op, CUBLASLT_MATMUL_DESC_B_SCALE_MODE, &x_mode, sizeof(x_mode)));
  }
  // Placeholder scale pointers so the heuristic sees a scaled GEMM; Run sets the real ones.
  CUBLAS_RETURN_IF_ERROR(cublasLtMatmulDescSetAttribute(
      plan->op, CUBLASLT_MATMUL_DESC_A_SCALE_POINTER, &c.w_scale_inv, sizeof(c.w_scale_inv)));
  CUBLAS_RETURN_IF_ERROR(cublasLtMatmulDescSetAttribute(
      plan->op, CUBLASLT_MATMUL_DESC_B_SCALE_POINTER, &c.x_scale_inv, sizeof(c.x_scale_inv)));

  CUBLAS_RETURN_IF_ERROR(cublasLtMatrixLayoutCreate(&plan->w_layout, c.w_type, s.k, s.n, s.k));
  CUBLAS_RETURN_IF_ERROR(cublasLtMatrixLayoutCreate(&plan->x_layout, c.x_type, s.k, s.m, s.k));
  CUBLAS_RETURN_IF_ERROR(cublasLtMatrixLayoutCreate(&plan->y_layout, c.out_type, s.n, s.m, s.n));

  cublasLtMatmulPreference_t pref = nullptr;
  CUBLAS_RETURN_IF_ERROR(cublasLtMatmulPreferenceCreate(&pref));
  const uint64_t ws = workspace_bytes_;
  cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &ws,
                                       sizeof(ws));
  cublasLtMatmulHeuristicResult_t result{};
  int found = 0;
  const cublasStatus_t hs =
      cublasLtMatmulAlgoGetHeuristic(handle_, plan->op, plan->w_layout, plan->x_layout,
                                     plan->y_layout, plan->y_layout, pref, 1, &result, &found);
  cublasLtMatmulPreferenceDestroy(pref);
  if (hs != CUBLAS_STATUS_SUCCESS || found == 0) {
    const std::string msg = absl::StrCat(
        "cuBLASLt has no FP8 algorithm for m=", s.m, " n=", s.n, " k=", s.k, " x ",
        TypeName(c.x_type), " w ", TypeName(c.w_type), " out ", TypeName(c.out_type),
        " scale_mode ", ScaleModeName(c.scale_mode), " fast_accum ", c.fast_accum,
        " accumulate ", c.accumulate, ": ", cublasLtGetStatusName(hs));
    if (hs == CUBLAS_STATUS_NOT_SUPPORTED || hs == CUBLAS_STATUS_ARCH_MISMATCH || found == 0) {
      return absl::FailedPreconditionError(msg);
    }
    return absl::InternalError(msg);
  }
  plan->algo = result.algo;
  const Plan* raw = plan.get();
  plans_.emplace(key, std::move(plan));
  return raw;
}

absl::Status Fp8GemmRunner::Run(const Fp8GemmConfig& c, const GemmShape& s, const uint8_t* x,
                                const uint8_t* w, void* y, cudaStream_t stream,
                                const void* c_ptr) {
  if (absl::Status v = Validate(c, s); !v.ok()) return v;
  absl::StatusOr<const Plan*> plan = GetPlan(c, s);
  if (!plan.ok()) return plan.status();
  const Plan& p = **plan;
  // Each tensor has its own scales, so the pointers are set on the cached descriptor right
  // before the launch (GEMMs run from one thread).
  CUBLAS_RETURN_IF_ERROR(cublasLtMatmulDescSetAttribute(
      p.op, CUBLASLT_MATMUL_DESC_A_SCALE_POINTER, &c.w_scale_inv, sizeof(c.w_scale_inv)));
  CUBLAS_RETURN_IF_ERROR(cublasLtMatmulDescSetAttribute(
      p.op, CUBLASLT_MATMUL_DESC_B_SCALE_POINTER, &c.x_scale_inv, sizeof(c.x_scale_inv)));
  const float beta = c.accumulate ? 1.f : 0.f;
  TimedCall timed;
  if (timing_) {
    timed.desc = Fp8GemmDesc::From(c, s);
    if (cudaEventCreate(&timed.start) != cudaSuccess ||
        cudaEventCreate(&timed.end) != cudaSuccess ||
        cudaEventRecord(timed.start, stream) != cudaSuccess) {
      return absl::InternalError("Fp8GemmRunner timing: cannot create or record a CUDA event");
    }
  }
  CUBLAS_RETURN_IF_ERROR(cublasLtMatmul(handle_, p.op, &c.alpha, w, p.w_layout, x, p.x_layout,
                                        &beta, c_ptr != nullptr ? c_ptr : y, p.y_layout, y,
                                        p.y_layout, &p.algo, workspace_,
                                        workspace_bytes_, stream));
  if (timing_) {
    if (cudaEventRecord(timed.end, stream) != cudaSuccess) {
      return absl::InternalError("Fp8GemmRunner timing: cannot record a CUDA event");
    }
    timed_.push_back(timed);
  }
  return absl::OkStatus();
}

absl::StatusOr<std::vector<Fp8GemmTiming>> Fp8GemmRunner::TakeTimings() {
  std::vector<Fp8GemmTiming> out;
  std::map<Fp8GemmDesc, size_t> index;
  absl::Status status = absl::OkStatus();
  for (TimedCall& t : timed_) {
    float ms = 0.f;
    if (status.ok()) {
      const cudaError_t e = cudaEventSynchronize(t.end);
      if (e == cudaSuccess && cudaEventElapsedTime(&ms, t.start, t.end) == cudaSuccess) {
        auto [it, added] = index.emplace(t.desc, out.size());
        if (added) out.push_back(Fp8GemmTiming{t.desc, 0, 0.0});
        out[it->second].calls += 1;
        out[it->second].ms += ms;
      } else {
        status = absl::InternalError(
            absl::StrCat("Fp8GemmRunner timing: a timed GEMM failed: ", cudaGetErrorString(e)));
      }
    }
    cudaEventDestroy(t.start);
    cudaEventDestroy(t.end);
  }
  timed_.clear();
  if (!status.ok()) return status;
  return out;
}

}  // namespace fp8d::kernels
