#include "core/ref/fp8_linear.h"

#include <cstdint>
#include <vector>

#include "absl/base/internal/raw_logging.h"
#include "absl/types/span.h"
#include "core/fp8_format.h"
#include "core/fp8_scaling.h"
#include "core/ref/linear.h"

namespace fp8d::ref {
namespace {

void Transpose(const float* in, float* out, int rows, int cols) {
  for (int r = 0; r < rows; ++r)
    for (int c = 0; c < cols; ++c)
      out[static_cast<int64_t>(c) * rows + r] = in[static_cast<int64_t>(r) * cols + c];
}

// Copies columns [c0, c0 + width) of a [rows, cols] matrix into a dense [rows, width] one.
std::vector<float> Columns(const float* in, int rows, int cols, int c0, int width) {
  std::vector<float> out(static_cast<size_t>(rows) * width);
  for (int r = 0; r < rows; ++r)
    for (int c = 0; c < width; ++c)
      out[static_cast<size_t>(r) * width + c] = in[static_cast<int64_t>(r) * cols + c0 + c];
  return out;
}

void StoreColumns(const float* in, float* out, int rows, int cols, int c0, int width) {
  for (int r = 0; r < rows; ++r)
    for (int c = 0; c < width; ++c)
      out[static_cast<int64_t>(r) * cols + c0 + c] = in[static_cast<size_t>(r) * width + c];
}

}  // namespace

QuantStats QuantizeOperand(const float* in, float* out, int rows, int cols, bool contract_rows,
                           const Fp8OperandQuant& q) {
  const int64_t numel = static_cast<int64_t>(rows) * cols;
  switch (q.scaling) {
    case Fp8Scaling::kTensor:
      return QuantizeDequantize(absl::MakeConstSpan(in, numel), absl::MakeSpan(out, numel),
                                q.format, q.scale);
    case Fp8Scaling::kCurrentTensor: {
      const float amax = Amax(absl::MakeConstSpan(in, numel));
      const float scale = ComputeScale(amax, Fp8Max(q.format), q.margin, 1.f);
      return QuantizeDequantize(absl::MakeConstSpan(in, numel), absl::MakeSpan(out, numel),
                                q.format, scale);
    }
    case Fp8Scaling::kBlocks: {
      std::vector<float> scales;
      if (!contract_rows) {
        const int bc = q.block_cols == 0 ? cols : q.block_cols;
        return QuantizeDequantizeBlocks(in, out, rows, cols, q.block_rows, bc, q.format, &scales);
      }
      // Quantize the transpose, whose rows run along the contraction dimension, and transpose
      // the result back.
      std::vector<float> t(static_cast<size_t>(numel));
      Transpose(in, t.data(), rows, cols);
      const int bc = q.block_cols == 0 ? rows : q.block_cols;
      const QuantStats stats = QuantizeDequantizeBlocks(t.data(), t.data(), cols, rows,
                                                        q.block_rows, bc, q.format, &scales);
      Transpose(t.data(), out, cols, rows);
      return stats;
    }
  }
  ABSL_RAW_CHECK(false, "unknown Fp8Scaling");
  return {};
}

void Fp8LinearForward(const float* x, const float* w, float* y, int m, int k, int n,
                      const Fp8LinearQuant& quant, Fp8LinearStats* stats) {
  const int r0 = quant.fp32_out_rows;
  const int nq = n - r0;
  ABSL_RAW_CHECK(r0 >= 0 && nq > 0, "fp32_out_rows must leave at least one FP8 output row");
  std::vector<float> xq(static_cast<size_t>(m) * k), wq(static_cast<size_t>(nq) * k);
  const QuantStats sx = QuantizeOperand(x, xq.data(), m, k, false, quant.input);
  const QuantStats sw =
      QuantizeOperand(w + static_cast<int64_t>(r0) * k, wq.data(), nq, k, false, quant.weight);
  if (stats != nullptr) {
    stats->input.Merge(sx);
    stats->weight.Merge(sw);
  }
  if (r0 == 0) {
    LinearForward(xq.data(), wq.data(), y, m, k, n);
    return;
  }
  std::vector<float> y_fp32(static_cast<size_t>(m) * r0), y_fp8(static_cast<size_t>(m) * nq);
  LinearForward(x, w, y_fp32.data(), m, k, r0);
  LinearForward(xq.data(), wq.data(), y_fp8.data(), m, k, nq);
  StoreColumns(y_fp32.data(), y, m, n, 0, r0);
  StoreColumns(y_fp8.data(), y, m, n, r0, nq);
}

void Fp8LinearBackward(const float* dy, const float* x, const float* w, float* dx, float* dw, int m,
                       int k, int n, const Fp8LinearQuant& quant, Fp8LinearStats* stats) {
  const int r0 = quant.fp32_out_rows;
  const int nq = n - r0;
  ABSL_RAW_CHECK(r0 >= 0 && nq > 0, "fp32_out_rows must leave at least one FP8 output row");
  const float* w8 = w + static_cast<int64_t>(r0) * k;
  std::vector<float> g8 = Columns(dy, m, n, r0, nq);

  // dX = Q(dY) Q(W): contraction over the output features.
  std::vector<float> gd(g8.size()), wd(static_cast<size_t>(nq) * k);
  const QuantStats sg = QuantizeOperand(g8.data(), gd.data(), m, nq, false, quant.grad_output);
  QuantizeOperand(w8, wd.data(), nq, k, true, quant.weight);
  if (stats != nullptr) stats->grad_output.Merge(sg);
  LinearBackwardInput(gd.data(), wd.data(), dx, m, k, nq);

  // dW = Q(dY)^T Q(X): contraction over the tokens.
  std::vector<float> gw(g8.size()), xw(static_cast<size_t>(m) * k);
  QuantizeOperand(g8.data(), gw.data(), m, nq, true, quant.grad_output);
  QuantizeOperand(x, xw.data(), m, k, true, quant.input);
  LinearBackwardWeight(gw.data(), xw.data(), dw + static_cast<int64_t>(r0) * k, m, k, nq);

  if (r0 > 0) {
    const std::vector<float> g32 = Columns(dy, m, n, 0, r0);
    std::vector<float> dx32(static_cast<size_t>(m) * k);
    LinearBackwardInput(g32.data(), w, dx32.data(), m, k, r0);
    for (size_t i = 0; i < dx32.size(); ++i) dx[i] += dx32[i];
    LinearBackwardWeight(g32.data(), x, dw, m, k, r0);
  }
}

}  // namespace fp8d::ref
