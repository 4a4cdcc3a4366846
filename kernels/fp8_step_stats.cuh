// The engine's per-step FP8 statistics: every Fp8Linear overwrites its stats at each call, so
// after each micro-batch the engine folds them into the step's totals (amax = max over the
// micro-batches with NaN winning, as core's QuantStats::Merge; counters summed), and writes the
// step's amaxes as a dense float array for DelayedScalingUpdate. One launch for all tensors.
#pragma once

#include <cuda_runtime.h>

#include "kernels/fp8_cast.cuh"

namespace fp8d::kernels {

// step[t] <- merge(step[t], latest[t]) and amaxes[t] <- step[t].amax for t < n_tensors where
// active[t] is nonzero (an inactive tensor is left alone: its layer ran BF16 for this pass).
// Zero `step` and `amaxes` at the start of the step.
void MergeFp8StepStats(Fp8CastStats* step, const Fp8CastStats* latest, const uint8_t* active,
                       float* amaxes, int n_tensors, cudaStream_t stream);

}  // namespace fp8d::kernels
