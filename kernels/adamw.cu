#include "kernels/adamw.cuh"

#include <algorithm>
#include <cmath>

#include "kernels/cuda_check.h"
#include "kernels/device_common.cuh"

namespace fp8d::kernels {
namespace {

constexpr int kThreads = 256;

__global__ void AdamWKernel(float* param, __nv_bfloat16* param_bf16, float* m, float* v,
                            const float* grad, int64_t n, float lr, float beta1, float beta2,
                            float eps, float weight_decay, float bc1, float bc2,
                            const float* grad_scale) {
  const float scale = grad_scale != nullptr ? *grad_scale : 1.f;
  if (!isfinite(scale)) return;
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const float g = grad[i] * scale;
    const float mi = beta1 * m[i] + (1.f - beta1) * g;
    const float vi = beta2 * v[i] + (1.f - beta2) * g * g;
    m[i] = mi;
    v[i] = vi;
    const float mhat = mi / bc1;
    const float vhat = vi / bc2;
    const float p = param[i] - lr * (mhat / (sqrtf(vhat) + eps) + weight_decay * param[i]);
    param[i] = p;
    if (param_bf16 != nullptr) param_bf16[i] = __float2bfloat16_rn(p);
  }
}

}  // namespace

void AdamWUpdate(cudaStream_t stream, float* param, __nv_bfloat16* param_bf16, float* m, float* v,
                 const float* grad, int64_t n, const AdamWParams& a, const float* grad_scale) {
  if (n == 0) return;
  FP8D_KERNELS_CHECK(a.step >= 1);
  // Bias corrections on the host, computed exactly as the reference does (float pow).
  const float bc1 = 1.f - std::pow(a.beta1, static_cast<float>(a.step));
  const float bc2 = 1.f - std::pow(a.beta2, static_cast<float>(a.step));
  const auto blocks = static_cast<unsigned>(std::min<int64_t>(CeilDiv(n, kThreads), 65536));
  AdamWKernel<<<blocks, kThreads, 0, stream>>>(param, param_bf16, m, v, grad, n, a.lr, a.beta1,
                                               a.beta2, a.eps, a.weight_decay, bc1, bc2,
                                               grad_scale);
  CUDA_CHECK_LAUNCH();
}

}  // namespace fp8d::kernels
