// fp8d-bench --gemm-timing: the FP8 GEMMs of a training step, timed inside the step, against the
// same GEMM (same cuBLASLt plan, same workspace) timed alone, back to back on random FP8 data.
// DESIGN.md's target: each FP8 GEMM at the model's shapes reaches >= 85% of the throughput
// cuBLASLt gives that shape alone.
#pragma once

#include <cuda_runtime.h>

#include "absl/status/status.h"
#include "core/engine.h"
#include "kernels/cuda_engine.h"

namespace fp8d::bench {

// Runs `steps` more training steps of `batch` with the engine's FP8 GEMMs timed, then each
// timed plan alone, and prints one line per plan plus the time-weighted total. Per-tensor plans
// (delayed, current) only are run alone: the row and block scale layouts are not rebuilt here,
// so their lines show the in-step time only.
absl::Status PrintStepGemmTiming(kernels::CudaEngine& engine, const TokenBatch& batch,
                                 const OptimizerStepArgs& args, int steps);

}  // namespace fp8d::bench
