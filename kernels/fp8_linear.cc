#include "kernels/fp8_linear.h"

#include <cstdint>
#include <utility>

#include "absl/strings/str_cat.h"
#include "kernels/cuda_check.h"
#include "kernels/fp8_block128.cuh"

namespace fp8d::kernels {
namespace {

constexpr size_t kAlign = 256;
constexpr size_t AlignUp(size_t n) { return (n + kAlign - 1) / kAlign * kAlign; }

cudaDataType_t LtType(Fp8Format f) {
  return f == Fp8Format::kE4M3 ? CUDA_R_8F_E4M3 : CUDA_R_8F_E5M2;
}

bool PerTensor(Fp8LinearScaling s) {
  return s == Fp8LinearScaling::kDelayed || s == Fp8LinearScaling::kCurrent;
}

Fp8ScaleMode ScaleMode(Fp8LinearScaling s) {
  switch (s) {
    case Fp8LinearScaling::kDelayed:
    case Fp8LinearScaling::kCurrent:
      return Fp8ScaleMode::kTensor;
    case Fp8LinearScaling::kRowwise:
      return Fp8ScaleMode::kRowwise;
    case Fp8LinearScaling::kBlock1x128:
      return Fp8ScaleMode::kBlock1x128;
  }
  return Fp8ScaleMode::kTensor;
}

// Dequantization factors an operand [rows, cols] contracted along cols needs.
int64_t ScaleCount(Fp8LinearScaling s, int64_t rows, int64_t cols) {
  switch (s) {
    case Fp8LinearScaling::kDelayed:
    case Fp8LinearScaling::kCurrent:
      return 1;
    case Fp8LinearScaling::kRowwise:
      return rows;
    case Fp8LinearScaling::kBlock1x128:
      return Fp8BlockScaleCount(rows, cols);
  }
  return 1;
}

// Per-tensor cast of one tensor [rows, cols] into `out` (and `out_t` when non-null), delayed or
// current, writing its scale_inv and stats.
template <typename T>
void PerTensorCast(const T* in, int64_t rows, int64_t cols, Fp8Format format,
                   const Fp8LinearOptions& options, const float* delayed_scale,
                   float* current_scale, uint8_t* out, uint8_t* out_t, float* scale_inv,
                   Fp8CastStats* stats, cudaStream_t stream) {
  if (options.scaling == Fp8LinearScaling::kDelayed) {
    CastToFp8(in, rows, cols, format, delayed_scale, out, out_t, scale_inv, stats, stream);
  } else {
    CurrentScaleCastToFp8(in, rows, cols, format, options.margin, out, out_t, current_scale,
                          scale_inv, stats, stream);
  }
}

}  // namespace

// Pieces of the workspace in order: the FP8 operands that live from one call to the next
// (Q(X)^T until the backward, the cached weight copies), their scale_inv arrays (per tensor: the
// transposed copy shares its tensor's single factor), then the current scales. The operands used
// only inside one call (Q(X) in the forward, Q(dY) and Q(dY)^T in the backward) are scratch:
// in the workspace after those pieces, or in a buffer shared by every layer.
struct Fp8Linear::Layout {
  enum Piece { kX, kXt, kW, kWt, kDy, kDyt, kPieces };
  static constexpr bool kScratch[kPieces] = {true, false, false, false, true, true};
  size_t data[kPieces];  // offsets into the workspace, or into the scratch for kScratch pieces
  size_t scale_inv[kPieces];
  size_t current_scale;
  size_t total;    // persistent bytes
  size_t scratch;  // scratch bytes

  Layout(const GemmShape& s, const Fp8LinearOptions& o) {
    const int64_t m = s.m, n = s.n, k = s.k;
    // [rows, cols] of each operand, contraction along cols.
    const int64_t dims[kPieces][2] = {{m, k}, {k, m}, {n, k}, {k, n}, {m, n}, {n, m}};
    size_t off = 0, scratch_off = 0;
    for (int p = 0; p < kPieces; ++p) {
      size_t& at = kScratch[p] ? scratch_off : off;
      data[p] = at;
      at += AlignUp(static_cast<size_t>(dims[p][0] * dims[p][1]));
    }
    for (int p = 0; p < kPieces; ++p) {
      if (PerTensor(o.scaling) && p % 2 == 1) {
        scale_inv[p] = scale_inv[p - 1];
        continue;
      }
      scale_inv[p] = off;
      const bool tiles = o.weight_tiles_128x128 && (p == kW || p == kWt);
      const int64_t count =
          tiles ? Fp8TileScaleCount(kCublasLtTileScaleLayout, dims[p][0], dims[p][1])
                : ScaleCount(o.scaling, dims[p][0], dims[p][1]);
      off += AlignUp(sizeof(float) * count);
    }
    current_scale = off;
    off += AlignUp(sizeof(float) * kFp8LinearRoles);
    total = off;
    scratch = scratch_off;
  }
};

absl::StatusOr<Fp8LinearOptions> Fp8LinearOptionsFromRecipe(const RecipeConfig& recipe) {
  Fp8LinearOptions o;
  o.grad_format = recipe.grad_format();
  o.margin = recipe.margin;
  o.fast_accum_forward = recipe.policy.fast_accum_forward;
  switch (recipe.kind) {
    case RecipeKind::kDelayed:
      o.scaling = Fp8LinearScaling::kDelayed;
      return o;
    case RecipeKind::kCurrent:
      o.scaling = Fp8LinearScaling::kCurrent;
      return o;
    case RecipeKind::kRowwise:
      o.scaling = Fp8LinearScaling::kRowwise;
      return o;
    case RecipeKind::kBlockwise:
      o.scaling = Fp8LinearScaling::kBlock1x128;
      o.weight_tiles_128x128 = recipe.weight_block == WeightBlock::k128x128;
      return o;
    case RecipeKind::kMxfp8:
      return absl::FailedPreconditionError(
          "recipe.kind mxfp8 needs sm_100 or newer (32-element E8M0 block scales); this GPU "
          "supports delayed, current, rowwise and blockwise");
    case RecipeKind::kBf16:
      break;
  }
  return absl::InvalidArgumentError(
      "recipe.kind bf16 is not an FP8 recipe; allowed: delayed, current, rowwise, blockwise");
}

size_t Fp8Linear::WorkspaceBytes(const GemmShape& shape, const Fp8LinearOptions& options,
                                 bool shared_scratch) {
  const Layout layout(shape, options);
  return layout.total + (shared_scratch ? 0 : layout.scratch);
}

size_t Fp8Linear::ScratchBytes(const GemmShape& shape, const Fp8LinearOptions& options) {
  return Layout(shape, options).scratch;
}

absl::StatusOr<Fp8Linear> Fp8Linear::Create(Fp8GemmRunner* runner, const GemmShape& shape,
                                            const Fp8LinearOptions& options,
                                            const Fp8LinearScales& scales, void* workspace,
                                            size_t workspace_bytes, Fp8CastStats* stats,
                                            void* scratch, size_t scratch_bytes) {
  const std::pair<const char*, int64_t> dims[] = {{"m", shape.m}, {"n", shape.n}, {"k", shape.k}};
  for (const auto& [name, v] : dims) {
    if (v <= 0 || v % 16 != 0) {
      return absl::InvalidArgumentError(absl::StrCat(
          "FP8 Linear ", name, " = ", v,
          " must be a positive multiple of 16 (each of m, n, k is one GEMM's contraction)"));
    }
  }
  if (runner == nullptr || workspace == nullptr || stats == nullptr) {
    return absl::InvalidArgumentError("FP8 Linear runner, workspace and stats are required");
  }
  const Layout layout(shape, options);
  const size_t needed = layout.total + (scratch == nullptr ? layout.scratch : 0);
  if (workspace_bytes < needed) {
    return absl::InvalidArgumentError(absl::StrCat("FP8 Linear workspace of ", workspace_bytes,
                                                   " bytes; this shape needs ", needed));
  }
  if (scratch != nullptr && scratch_bytes < layout.scratch) {
    return absl::InvalidArgumentError(absl::StrCat("FP8 Linear scratch of ", scratch_bytes,
                                                   " bytes; this shape needs ", layout.scratch));
  }
  if (reinterpret_cast<uintptr_t>(workspace) % kAlign != 0 ||
      reinterpret_cast<uintptr_t>(scratch) % kAlign != 0) {
    return absl::InvalidArgumentError("FP8 Linear workspace and scratch must be 256-byte aligned");
  }
  if (options.scaling == Fp8LinearScaling::kDelayed &&
      (scales.input == nullptr || scales.weight == nullptr || scales.grad_output == nullptr)) {
    return absl::InvalidArgumentError(
        "FP8 Linear delayed scaling needs scales.input, scales.weight and scales.grad_output");
  }
  Fp8Linear l;
  l.runner_ = runner;
  l.shape_ = shape;
  l.max_rows_ = shape.m;
  l.options_ = options;
  l.scales_ = scales;
  l.stats_ = stats;
  auto* base = static_cast<uint8_t*>(workspace);
  auto* scratch_base =
      scratch != nullptr ? static_cast<uint8_t*>(scratch) : base + layout.total;
  Operand* ops[Layout::kPieces] = {&l.x_, &l.x_t_, &l.w_, &l.w_t_, &l.dy_, &l.dy_t_};
  for (int p = 0; p < Layout::kPieces; ++p) {
    ops[p]->data = (Layout::kScratch[p] ? scratch_base : base) + layout.data[p];
    ops[p]->scale_inv = reinterpret_cast<float*>(base + layout.scale_inv[p]);
  }
  l.current_scale_ = reinterpret_cast<float*>(base + layout.current_scale);
  return l;
}

absl::Status Fp8Linear::SetRows(int64_t m) {
  if (m <= 0 || m % 16 != 0 || m > max_rows_) {
    return absl::InvalidArgumentError(absl::StrCat("FP8 Linear rows m = ", m,
                                                   " must be a positive multiple of 16, at most ",
                                                   max_rows_, " (the m it was created with)"));
  }
  shape_.m = m;
  return absl::OkStatus();
}

template <typename T>
void Fp8Linear::CastWeightsImpl(const T* w, cudaStream_t stream) {
  const int64_t n = shape_.n, k = shape_.k;
  const Fp8Format f = Fp8Format::kE4M3;
  Fp8CastStats* stats = stats_ + kFp8Weight;
  switch (options_.scaling) {
    case Fp8LinearScaling::kDelayed:
    case Fp8LinearScaling::kCurrent:
      PerTensorCast(w, n, k, f, options_, scales_.weight, current_scale_ + kFp8Weight, w_.data,
                    w_t_.data, w_.scale_inv, stats, stream);
      break;
    case Fp8LinearScaling::kRowwise:
      RowwiseCastToFp8(w, n, k, f, w_.data, w_.scale_inv, nullptr, stats, stream);
      TransposedRowwiseCastToFp8(w, n, k, f, w_t_.data, w_t_.scale_inv, nullptr, nullptr, stream);
      break;
    case Fp8LinearScaling::kBlock1x128:
      if (options_.weight_tiles_128x128) {
        Block128x128CastTransposeToFp8(w, n, k, f, w_.data, w_.scale_inv, w_t_.data,
                                       w_t_.scale_inv, stats, stream);
        break;
      }
      BlockwiseCastToFp8(w, n, k, f, w_.data, w_.scale_inv, nullptr, stats, stream);
      TransposedBlockwiseCastToFp8(w, n, k, f, w_t_.data, w_t_.scale_inv, nullptr, nullptr,
                                   stream);
      break;
  }
  weights_cast_ = true;
}

void Fp8Linear::CastWeights(const __nv_bfloat16* w, cudaStream_t stream) {
  CastWeightsImpl(w, stream);
}
void Fp8Linear::CastWeights(const float* w, cudaStream_t stream) { CastWeightsImpl(w, stream); }

Fp8GemmConfig Fp8Linear::GemmConfig(Fp8Format x_format, const Operand& x, const Operand& w,
                                    bool weight_gemm) const {
  Fp8GemmConfig c;
  c.x_type = LtType(x_format);
  c.w_type = CUDA_R_8F_E4M3;  // W and X, the `w` side of every GEMM here, are E4M3
  c.scale_mode = weight_gemm && options_.weight_tiles_128x128 ? Fp8ScaleMode::kBlock128x128
                                                              : ScaleMode(options_.scaling);
  c.x_scale_inv = x.scale_inv;
  c.w_scale_inv = w.scale_inv;
  return c;
}

absl::Status Fp8Linear::Forward(const __nv_bfloat16* x, __nv_bfloat16* y, cudaStream_t stream,
                                bool for_backward, const __nv_bfloat16* residual) {
  if (!weights_cast_) {
    return absl::FailedPreconditionError("FP8 Linear Forward before CastWeights");
  }
  const int64_t m = shape_.m, k = shape_.k;
  const Fp8Format f = Fp8Format::kE4M3;
  Fp8CastStats* stats = stats_ + kFp8Input;
  switch (options_.scaling) {
    case Fp8LinearScaling::kDelayed:
    case Fp8LinearScaling::kCurrent:
      PerTensorCast(x, m, k, f, options_, scales_.input, current_scale_ + kFp8Input, x_.data,
                    for_backward ? x_t_.data : nullptr, x_.scale_inv, stats, stream);
      break;
    case Fp8LinearScaling::kRowwise:
      RowwiseCastToFp8(x, m, k, f, x_.data, x_.scale_inv, nullptr, stats, stream);
      break;
    case Fp8LinearScaling::kBlock1x128:
      BlockwiseCastToFp8(x, m, k, f, x_.data, x_.scale_inv, nullptr, stats, stream);
      break;
  }
  return ForwardGemm(y, stream, residual);
}

absl::Status Fp8Linear::ForwardGemm(__nv_bfloat16* y, cudaStream_t stream,
                                    const __nv_bfloat16* residual) {
  Fp8GemmConfig c = GemmConfig(Fp8Format::kE4M3, x_, w_, /*weight_gemm=*/true);
  c.out_type = CUDA_R_16BF;
  // cuBLASLt 13.1 on sm_90 has no VEC128_32F (1x128) algorithm with fast accumulation: it answers
  // CUBLAS_STATUS_NOT_SUPPORTED at every shape (H100, 2026-11-22), so 1x128 blocks always use
  // split accumulation, which is also what block scaling needs for accuracy.
  c.fast_accum = options_.fast_accum_forward && options_.scaling != Fp8LinearScaling::kBlock1x128;
  c.accumulate = residual != nullptr;
  return runner_->Run(c, shape_, x_.data, w_.data, y, stream, residual);
}

absl::Status Fp8Linear::Backward(const __nv_bfloat16* dy, const __nv_bfloat16* x,
                                 __nv_bfloat16* dx, float* dw, cudaStream_t stream) {
  if (!weights_cast_) {
    return absl::FailedPreconditionError("FP8 Linear Backward before CastWeights");
  }
  if (dy == nullptr || dw == nullptr || (!PerTensor(options_.scaling) && x == nullptr)) {
    return absl::InvalidArgumentError("FP8 Linear Backward needs dy, dw and (block modes) x");
  }
  const int64_t m = shape_.m, n = shape_.n, k = shape_.k;
  const Fp8Format g = options_.grad_format;
  const Fp8Format f = Fp8Format::kE4M3;
  Fp8CastStats* stats = stats_ + kFp8GradOutput;
  switch (options_.scaling) {
    case Fp8LinearScaling::kDelayed:
    case Fp8LinearScaling::kCurrent:
      // dY and dY^T in one read; Q(X)^T was written by the forward's cast.
      PerTensorCast(dy, m, n, g, options_, scales_.grad_output, current_scale_ + kFp8GradOutput,
                    dy_.data, dy_t_.data, dy_.scale_inv, stats, stream);
      break;
    case Fp8LinearScaling::kRowwise:
      RowwiseCastToFp8(dy, m, n, g, dy_.data, dy_.scale_inv, nullptr, stats, stream);
      TransposedRowwiseCastToFp8(dy, m, n, g, dy_t_.data, dy_t_.scale_inv, nullptr, nullptr,
                                 stream);
      TransposedRowwiseCastToFp8(x, m, k, f, x_t_.data, x_t_.scale_inv, nullptr, nullptr, stream);
      break;
    case Fp8LinearScaling::kBlock1x128:
      BlockwiseCastToFp8(dy, m, n, g, dy_.data, dy_.scale_inv, nullptr, stats, stream);
      TransposedBlockwiseCastToFp8(dy, m, n, g, dy_t_.data, dy_t_.scale_inv, nullptr, nullptr,
                                   stream);
      TransposedBlockwiseCastToFp8(x, m, k, f, x_t_.data, x_t_.scale_inv, nullptr, nullptr,
                                   stream);
      break;
  }
  return BackwardGemms(dx, dw, stream);
}

absl::Status Fp8Linear::BackwardGemms(__nv_bfloat16* dx, float* dw, cudaStream_t stream) {
  const int64_t m = shape_.m, n = shape_.n, k = shape_.k;
  const Fp8Format g = options_.grad_format;
  if (dx != nullptr) {
    // dX [m, k] = dY [m, n] . (W^T [k, n])^T
    Fp8GemmConfig c = GemmConfig(g, dy_, w_t_, /*weight_gemm=*/true);
    c.out_type = CUDA_R_16BF;
    absl::Status st = runner_->Run(c, GemmShape{m, k, n}, dy_.data, w_t_.data, dx, stream);
    if (!st.ok()) return st;
  }
  // dW [n, k] += dY^T [n, m] . (X^T [k, m])^T
  Fp8GemmConfig c = GemmConfig(g, dy_t_, x_t_, /*weight_gemm=*/false);
  c.out_type = CUDA_R_32F;
  c.accumulate = true;
  return runner_->Run(c, GemmShape{n, k, m}, dy_t_.data, x_t_.data, dw, stream);
}

Fp8CastTarget Fp8Linear::InputTarget(bool for_backward) const {
  Fp8CastTarget t;
  t.format = Fp8Format::kE4M3;
  t.scale = scales_.input;
  t.data = x_.data;
  t.data_t = for_backward ? x_t_.data : nullptr;
  t.scale_inv = x_.scale_inv;
  t.stats = stats_ + kFp8Input;
  return t;
}

Fp8CastTarget Fp8Linear::GradOutputTarget() const {
  Fp8CastTarget t;
  t.format = options_.grad_format;
  t.scale = scales_.grad_output;
  t.data = dy_.data;
  t.data_t = dy_t_.data;
  t.scale_inv = dy_.scale_inv;
  t.stats = stats_ + kFp8GradOutput;
  return t;
}

absl::Status Fp8Linear::ForwardQuantized(__nv_bfloat16* y, cudaStream_t stream,
                                         const __nv_bfloat16* residual) {
  if (!weights_cast_ || !TakesQuantizedOperands()) {
    return absl::FailedPreconditionError(
        "FP8 Linear ForwardQuantized needs delayed scaling and CastWeights first");
  }
  return ForwardGemm(y, stream, residual);
}

absl::Status Fp8Linear::BackwardQuantized(__nv_bfloat16* dx, float* dw, cudaStream_t stream) {
  if (!weights_cast_ || !TakesQuantizedOperands()) {
    return absl::FailedPreconditionError(
        "FP8 Linear BackwardQuantized needs delayed scaling and CastWeights first");
  }
  if (dw == nullptr) return absl::InvalidArgumentError("FP8 Linear BackwardQuantized needs dw");
  return BackwardGemms(dx, dw, stream);
}

}  // namespace fp8d::kernels
