#include "kernels/fp8_step_stats.cuh"

namespace fp8d::kernels {
namespace {

__global__ void MergeKernel(Fp8CastStats* step, const Fp8CastStats* latest,
                            const uint8_t* active, float* amaxes, int n) {
  const int t = blockIdx.x * blockDim.x + threadIdx.x;
  if (t >= n || active[t] == 0) return;
  Fp8CastStats s = step[t];
  const Fp8CastStats l = latest[t];
  s.amax = (isnan(s.amax) || isnan(l.amax)) ? __int_as_float(0x7fc00000) : fmaxf(s.amax, l.amax);
  s.saturated += l.saturated;
  s.underflow += l.underflow;
  s.nonzero += l.nonzero;
  step[t] = s;
  amaxes[t] = s.amax;
}

}  // namespace

void MergeFp8StepStats(Fp8CastStats* step, const Fp8CastStats* latest, const uint8_t* active,
                       float* amaxes, int n_tensors, cudaStream_t stream) {
  if (n_tensors <= 0) return;
  constexpr int kThreads = 128;
  MergeKernel<<<(n_tensors + kThreads - 1) / kThreads, kThreads, 0, stream>>>(
      step, latest, active, amaxes, n_tensors);
}

}  // namespace fp8d::kernels
