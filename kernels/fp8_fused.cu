#include "kernels/fp8_fused.cuh"

#include "core/fp8_format.h"
#include "kernels/cuda_check.h"
#include "kernels/device_common.cuh"
#include "kernels/elementwise_math.cuh"
#include "kernels/fp8_cast_device.cuh"
#include "kernels/rmsnorm.cuh"

namespace fp8d::kernels {
namespace {

using bf16 = __nv_bfloat16;
using fp8_device::CastTransposeTiledKernel;
using fp8_device::kFastThreads;
using fp8_device::kFastTile;
using fp8_device::TiledGrid;

// Eight BF16 values from a 16-byte aligned address.
__device__ __forceinline__ void Load8(const bf16* p, bf16 (&v)[8]) {
  *reinterpret_cast<uint4*>(v) = *reinterpret_cast<const uint4*>(p);
}
__device__ __forceinline__ void Load8(const bf16* p, float (&v)[8]) {
  alignas(16) bf16 vals[8];
  Load8(p, vals);
#pragma unroll
  for (int j = 0; j < 8; ++j) v[j] = __bfloat162float(vals[j]);
}

// The loaders compute the values with the unfused kernels' own formulas
// (kernels/elementwise_math.cuh), so they round to the same BF16 values and cast to the same
// codes.
struct RmsNormLoader {
  static constexpr int kVec = 8;
  const bf16* x;
  const float* rstd;
  const float* weight;
  int64_t channels;

  __device__ __forceinline__ void operator()(int64_t row, int64_t col, float (&v)[8]) const {
    Load8(x + row * channels + col, v);
    const float r = rstd[row];
#pragma unroll
    for (int j = 0; j < 8; ++j) v[j] = __bfloat162float(RmsNormValue(v[j], r, weight[col + j]));
  }
};

struct SwiGluForwardLoader {
  static constexpr int kVec = 8;
  const bf16* gate_up;
  int64_t d_ff;

  __device__ __forceinline__ void operator()(int64_t row, int64_t col, float (&v)[8]) const {
    alignas(16) bf16 g[8], u[8];
    Load8(gate_up + row * 2 * d_ff + col, g);
    Load8(gate_up + row * 2 * d_ff + d_ff + col, u);
#pragma unroll
    for (int j = 0; j < 8; ++j) v[j] = __bfloat162float(SwiGluValue(g[j], u[j]));
  }
};

// Columns [0, d_ff) of dgate_up are dgate, [d_ff, 2 d_ff) dup; a 64-column tile lies in one half
// (d_ff is a multiple of 64).
struct SwiGluBackwardLoader {
  static constexpr int kVec = 8;
  const bf16* dh;
  const bf16* gate_up;
  int64_t d_ff;

  __device__ __forceinline__ void operator()(int64_t row, int64_t col, float (&v)[8]) const {
    const bool is_gate = col < d_ff;
    const int64_t j0 = is_gate ? col : col - d_ff;
    alignas(16) bf16 g[8], u[8], d[8];
    Load8(gate_up + row * 2 * d_ff + j0, g);
    Load8(dh + row * d_ff + j0, d);
    // dup does not depend on up: the dup half reads no up values.
    if (is_gate) Load8(gate_up + row * 2 * d_ff + d_ff + j0, u);
#pragma unroll
    for (int j = 0; j < 8; ++j) {
      bf16 dgate, dup;
      SwiGluGrad(g[j], is_gate ? u[j] : g[j], d[j], &dgate, &dup);
      v[j] = __bfloat162float(is_gate ? dgate : dup);
    }
  }
};

bool Aligned16(const void* p) { return reinterpret_cast<uintptr_t>(p) % 16 == 0; }

template <typename Loader>
void Launch(const Loader& load, int64_t rows, int64_t cols, const Fp8CastTarget& t,
            cudaStream_t stream) {
  FP8D_KERNELS_CHECK(FusedFp8CastFits(rows, cols));
  FP8D_KERNELS_CHECK(t.scale != nullptr && t.data != nullptr && t.scale_inv != nullptr);
  FP8D_KERNELS_CHECK(reinterpret_cast<uintptr_t>(t.data) % 8 == 0 &&
                     reinterpret_cast<uintptr_t>(t.data_t) % 8 == 0);
  if (t.stats != nullptr) {
    CUDA_CHECK(cudaMemsetAsync(t.stats, 0, sizeof(Fp8CastStats), stream));
  }
  if (t.format == Fp8Format::kE4M3) {
    CastTransposeTiledKernel<Loader, true><<<TiledGrid(rows, cols), kFastThreads, 0, stream>>>(
        load, rows, cols, t.scale, nullptr, 0, kE4M3Max, t.data, t.data_t, nullptr, t.scale_inv,
        t.stats);
  } else {
    CastTransposeTiledKernel<Loader, false><<<TiledGrid(rows, cols), kFastThreads, 0, stream>>>(
        load, rows, cols, t.scale, nullptr, 0, kE5M2Max, t.data, t.data_t, nullptr, t.scale_inv,
        t.stats);
  }
  CUDA_CHECK_LAUNCH();
}

}  // namespace

bool FusedFp8CastFits(int64_t rows, int64_t cols) {
  return rows > 0 && cols > 0 && rows % kFastTile == 0 && cols % kFastTile == 0;
}

void RmsNormForwardToFp8(cudaStream_t stream, float* rstd, const __nv_bfloat16* x,
                         const float* weight, int64_t rows, int channels, float eps,
                         const Fp8CastTarget& target) {
  FP8D_KERNELS_CHECK(rstd != nullptr && Aligned16(x));
  // rstd from the unfused kernel itself (y = null), so the saved rstd and the values cast
  // below are bit for bit those of RmsNormForward.
  RmsNormForward(stream, nullptr, rstd, x, weight, rows, channels, eps);
  Launch(RmsNormLoader{x, rstd, weight, channels}, rows, channels, target, stream);
}

void SwiGluForwardToFp8(cudaStream_t stream, const __nv_bfloat16* gate_up, int64_t rows, int d_ff,
                        const Fp8CastTarget& target) {
  FP8D_KERNELS_CHECK(Aligned16(gate_up));
  Launch(SwiGluForwardLoader{gate_up, d_ff}, rows, d_ff, target, stream);
}

void SwiGluBackwardToFp8(cudaStream_t stream, const __nv_bfloat16* dh,
                         const __nv_bfloat16* gate_up, int64_t rows, int d_ff,
                         const Fp8CastTarget& target) {
  FP8D_KERNELS_CHECK(Aligned16(dh) && Aligned16(gate_up));
  Launch(SwiGluBackwardLoader{dh, gate_up, d_ff}, rows, 2 * int64_t{d_ff}, target, stream);
}

}  // namespace fp8d::kernels
