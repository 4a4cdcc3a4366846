#include "kernels/convert.cuh"

#include <algorithm>

#include "kernels/cuda_check.h"
#include "kernels/device_common.cuh"

namespace fp8d::kernels {
namespace {

constexpr int kThreads = 256;

template <typename Out, typename In>
__global__ void ConvertKernel(Out* out, const In* in, int64_t n) {
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    out[i] = FromFloat<Out>(ToFloat(in[i]));
  }
}

template <typename Out, typename In>
void LaunchConvert(cudaStream_t stream, Out* out, const In* in, int64_t n) {
  if (n == 0) return;
  const auto blocks = static_cast<unsigned>(std::min<int64_t>(CeilDiv(n, kThreads), 65536));
  ConvertKernel<<<blocks, kThreads, 0, stream>>>(out, in, n);
  CUDA_CHECK_LAUNCH();
}

}  // namespace

void FloatToBf16(cudaStream_t stream, __nv_bfloat16* out, const float* in, int64_t n) {
  LaunchConvert(stream, out, in, n);
}

void Bf16ToFloat(cudaStream_t stream, float* out, const __nv_bfloat16* in, int64_t n) {
  LaunchConvert(stream, out, in, n);
}

}  // namespace fp8d::kernels
