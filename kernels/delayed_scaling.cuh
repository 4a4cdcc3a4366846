// The delayed-scaling update after a step, for every FP8 tensor at once, with Transformer
// Engine's semantics as core/fp8_scaling.h states them (AmaxHistory + ComputeScale):
//   history[t] <- [amax[t], history[t][0 .. len-2]]          (newest first, oldest dropped)
//   reduced    = max over the window skipping NaN (fmaxf), or history[t][0] for most_recent
//   scale[t]   = (fp8_max[t] / reduced) / 2^margin, or the previous scale[t] when reduced is
//                0, NaN or inf or the quotient is not finite
//   scale_inv[t] = 1 / scale[t] (the GEMMs' dequantisation factor), when asked for.
// One launch for the whole model: no per-tensor launches and no host round trip.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

#include "core/recipe_config.h"

namespace fp8d::kernels {

// histories: [n_tensors, history_len] row-major (history_len may be 0: the window is empty, the
// reduced amax is 0 and every scale stays). amaxes, fp8_max, scales: [n_tensors]. scale_inv:
// [n_tensors] or null. The update is in place on histories and scales.
void DelayedScalingUpdate(const float* amaxes, float* histories, int history_len,
                          const float* fp8_max, int n_tensors, AmaxAlgo algo, int margin,
                          float* scales, float* scale_inv, cudaStream_t stream);

#if defined(__CUDACC__)
// core's ComputeScale on the device, the same FP32 operations in the same order (nvcc's default
// IEEE division; the fast-math flags would break the bit-exact match).
__device__ __forceinline__ float DeviceComputeScale(float amax, float fp8_max, int margin,
                                                    float previous_scale) {
  if (!isfinite(amax) || !(amax > 0.f)) return previous_scale;
  const float scale = (fp8_max / amax) / ldexpf(1.f, margin);
  if (!isfinite(scale)) return previous_scale;
  return scale;
}
#endif

}  // namespace fp8d::kernels
