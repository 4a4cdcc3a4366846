#include "tests/bench/step_gemm_timing.h"

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "core/rng.h"
#include "kernels/gemm_fp8.h"

namespace fp8d::bench {
namespace {

using kernels::Fp8GemmConfig;
using kernels::Fp8GemmDesc;
using kernels::Fp8GemmRunner;
using kernels::Fp8ScaleMode;

constexpr int kAloneWarmup = 3;
constexpr int kAloneRuns = 20;

const char* TypeName(int t) {
  return t == CUDA_R_8F_E4M3 ? "e4m3" : t == CUDA_R_8F_E5M2 ? "e5m2"
                                      : t == CUDA_R_32F      ? "f32"
                                                             : "bf16";
}

// Random FP8 bytes with no NaN or infinity in either format (exponent bits never all ones), so
// the GEMM does the work of real data.
std::vector<uint8_t> RandomFp8(size_t n, Rng& rng) {
  std::vector<uint8_t> out(n);
  for (uint8_t& b : out) {
    b = static_cast<uint8_t>(rng.NextBelow(256));
    if ((b & 0x7C) == 0x7C) b &= 0xBF;  // E5M2 exponent 11111 -> 10111; E4M3 then no 0x7F either
  }
  return out;
}

template <typename T>
struct Device {
  T* p = nullptr;
  explicit Device(size_t n) {
    if (cudaMalloc(&p, std::max<size_t>(n, 1) * sizeof(T)) != cudaSuccess) p = nullptr;
  }
  ~Device() { cudaFree(p); }
};

// Mean ms of one per-tensor GEMM of plan `d` run alone on the engine's runner.
absl::StatusOr<double> TimeAlone(Fp8GemmRunner& runner, const Fp8GemmDesc& d, Rng& rng) {
  const size_t out_bytes = d.out_type == CUDA_R_32F ? 4 : 2;
  Device<uint8_t> x(static_cast<size_t>(d.m * d.k)), w(static_cast<size_t>(d.n * d.k));
  Device<uint8_t> y(static_cast<size_t>(d.m * d.n) * out_bytes);
  // Separate allocations: cuBLASLt refuses (NOT_SUPPORTED) a scale pointer that is not 16-byte
  // aligned, such as the second float of one array.
  Device<float> x_scale(1), w_scale(1);
  if (x.p == nullptr || w.p == nullptr || y.p == nullptr || x_scale.p == nullptr ||
      w_scale.p == nullptr) {
    return absl::ResourceExhaustedError("no GPU memory for the GEMM alone");
  }
  const std::vector<uint8_t> hx = RandomFp8(static_cast<size_t>(d.m * d.k), rng);
  const std::vector<uint8_t> hw = RandomFp8(static_cast<size_t>(d.n * d.k), rng);
  const float one = 1.f;
  cudaMemcpy(x.p, hx.data(), hx.size(), cudaMemcpyHostToDevice);
  cudaMemcpy(w.p, hw.data(), hw.size(), cudaMemcpyHostToDevice);
  cudaMemcpy(x_scale.p, &one, sizeof(one), cudaMemcpyHostToDevice);
  cudaMemcpy(w_scale.p, &one, sizeof(one), cudaMemcpyHostToDevice);
  cudaMemset(y.p, 0, static_cast<size_t>(d.m * d.n) * out_bytes);
  Fp8GemmConfig c;
  c.x_type = static_cast<cudaDataType_t>(d.x_type);
  c.w_type = static_cast<cudaDataType_t>(d.w_type);
  c.out_type = static_cast<cudaDataType_t>(d.out_type);
  c.scale_mode = Fp8ScaleMode::kTensor;
  c.x_scale_inv = x_scale.p;
  c.w_scale_inv = w_scale.p;
  c.fast_accum = d.fast_accum;
  c.accumulate = d.accumulate;
  // Scaled down so that accumulating runs stay finite.
  c.alpha = 1e-6f;
  cudaEvent_t start, end;
  cudaEventCreate(&start);
  cudaEventCreate(&end);
  absl::Status s = absl::OkStatus();
  for (int i = 0; i < kAloneWarmup + kAloneRuns && s.ok(); ++i) {
    if (i == kAloneWarmup) cudaEventRecord(start, nullptr);
    s = runner.Run(c, {d.m, d.n, d.k}, x.p, w.p, y.p, nullptr);
  }
  cudaEventRecord(end, nullptr);
  float ms = 0.f;
  const cudaError_t e = cudaEventSynchronize(end);
  if (e == cudaSuccess) cudaEventElapsedTime(&ms, start, end);
  cudaEventDestroy(start);
  cudaEventDestroy(end);
  if (!s.ok()) return s;
  if (e != cudaSuccess) return absl::InternalError(cudaGetErrorString(e));
  return ms / kAloneRuns;
}

}  // namespace

absl::Status PrintStepGemmTiming(kernels::CudaEngine& engine, const TokenBatch& batch,
                                 const OptimizerStepArgs& args, int steps) {
  Fp8GemmRunner* runner = engine.fp8_gemm_runner();
  if (runner == nullptr) return absl::FailedPreconditionError("the recipe runs no FP8 GEMM");
  runner->set_timing(true);
  OptimizerStepArgs a = args;
  for (int s = 0; s < steps; ++s, ++a.step) {
    absl::StatusOr<StepResult> r = engine.TrainStep({&batch, 1}, a);
    if (!r.ok()) {
      runner->set_timing(false);
      return r.status();
    }
  }
  runner->set_timing(false);
  absl::StatusOr<std::vector<kernels::Fp8GemmTiming>> timings = runner->TakeTimings();
  if (!timings.ok()) return timings.status();
  cudaDeviceSynchronize();

  Rng rng(5);
  double in_step_total = 0, alone_total = 0, unmatched = 0;
  std::printf("  FP8 GEMMs of the step (%d steps timed; alone: the same plan, %d runs):\n", steps,
              kAloneRuns);
  for (const kernels::Fp8GemmTiming& t : *timings) {
    const Fp8GemmDesc& d = t.desc;
    const double in_step_ms = t.ms / t.calls;
    const double tflop = 2.0 * d.m * d.n * d.k / 1e12;
    std::string line = absl::StrCat(
        "    m=", d.m, " n=", d.n, " k=", d.k, " ", TypeName(d.x_type), "x", TypeName(d.w_type),
        "->", TypeName(d.out_type), d.fast_accum ? " fast" : " split",
        d.accumulate ? " +=" : "", " calls/step=", t.calls / steps);
    absl::StrAppend(&line, " in-step ", absl::StrFormat("%.3f ms %.0f TFLOP/s", in_step_ms,
                                                         tflop / (in_step_ms / 1e3)));
    if (d.scale_mode == static_cast<int>(Fp8ScaleMode::kTensor)) {
      absl::StatusOr<double> alone = TimeAlone(*runner, d, rng);
      if (!alone.ok()) return alone.status();
      absl::StrAppend(&line, absl::StrFormat(" alone %.3f ms %.0f TFLOP/s ratio %.2f", *alone,
                                             tflop / (*alone / 1e3), *alone / in_step_ms));
      in_step_total += t.ms / steps;
      alone_total += *alone * t.calls / steps;
    } else {
      unmatched += t.ms / steps;
    }
    std::printf("%s\n", line.c_str());
  }
  if (in_step_total > 0) {
    std::printf("  FP8 GEMM time per step: %.2f ms in the step, %.2f ms alone: %.1f%% of the "
                "alone throughput\n",
                in_step_total, alone_total, 100.0 * alone_total / in_step_total);
  }
  if (unmatched > 0) {
    std::printf("  FP8 GEMM time per step with row or block scales (in-step only): %.2f ms\n",
                unmatched);
  }
  std::fflush(stdout);
  return absl::OkStatus();
}

}  // namespace fp8d::bench
