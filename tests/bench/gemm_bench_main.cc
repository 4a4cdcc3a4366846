// fp8d-gemm-bench: FP8 against BF16 GEMM throughput through cuBLASLt at the Linear shapes of the
// 124m and 1b models (forward, Y[tokens, out] = X[tokens, in] · W[out, in]^T, TN layout).
//
// Per shape it prints the time and TFLOP/s of
//   bf16       GemmRunner, BF16 in and out (the engine's BF16 path)
//   fp8        Fp8GemmRunner, E4M3 x E4M3 -> BF16, per-tensor scales, fast accumulation
//   fp8-split  the same without fast accumulation (what dgrad/wgrad use)
//   fp8-1x128  1x128 blockwise scales (VEC128_32F), no fast accumulation
// and the speed-up of fp8 over bf16. Shapes whose FP8 GEMM is not faster are the ones a per-layer
// policy should keep in BF16.
//
//   fp8d-gemm-bench                   # both models at 16384 tokens
//   fp8d-gemm-bench --tokens 4096 --iters 100
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "kernels/fp8_cast.cuh"
#include "kernels/gemm.h"
#include "kernels/gemm_fp8.h"

namespace {

using fp8d::kernels::Fp8GemmConfig;
using fp8d::kernels::Fp8GemmRunner;
using fp8d::kernels::Fp8ScaleMode;
using fp8d::kernels::GemmConfig;
using fp8d::kernels::GemmRunner;
using fp8d::kernels::GemmShape;

struct LayerShape {
  const char* model;
  const char* name;
  int64_t n, k;  // out, in features
};

// d_model, q + 2 kv heads, SwiGLU hidden and the padded vocabulary of core/model_config.cc.
const LayerShape kShapes[] = {
    {"124m", "qkv", 2304, 768},   {"124m", "attn_out", 768, 768},
    {"124m", "mlp_up", 2048, 768}, {"124m", "mlp_down", 768, 2048},
    {"124m", "lm_head", 50304, 768},
    {"1b", "qkv", 3072, 2048},    {"1b", "attn_out", 2048, 2048},
    {"1b", "mlp_up", 8192, 2048}, {"1b", "mlp_down", 2048, 8192},
    {"1b", "lm_head", 50304, 2048},
};

void Check(cudaError_t err, const char* what) {
  if (err != cudaSuccess) {
    std::fprintf(stderr, "%s: %s\n", what, cudaGetErrorString(err));
    std::exit(1);
  }
}

template <typename Fn>
double TimeMs(Fn&& fn, int warmup, int iters) {
  for (int i = 0; i < warmup; ++i) fn();
  cudaEvent_t start, stop;
  Check(cudaEventCreate(&start), "cudaEventCreate");
  Check(cudaEventCreate(&stop), "cudaEventCreate");
  Check(cudaEventRecord(start), "cudaEventRecord");
  for (int i = 0; i < iters; ++i) fn();
  Check(cudaEventRecord(stop), "cudaEventRecord");
  Check(cudaEventSynchronize(stop), "cudaEventSynchronize");
  float ms = 0.f;
  Check(cudaEventElapsedTime(&ms, start, stop), "cudaEventElapsedTime");
  cudaEventDestroy(start);
  cudaEventDestroy(stop);
  return ms / iters;
}

void Die(const absl::Status& st) {
  std::fprintf(stderr, "%s\n", st.ToString().c_str());
  std::exit(1);
}

}  // namespace

int main(int argc, char** argv) {
  int64_t tokens = 16384;
  int iters = 50, warmup = 10;
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    if (arg == "--tokens" && i + 1 < argc) {
      tokens = std::atoll(argv[++i]);
    } else if (arg == "--iters" && i + 1 < argc) {
      iters = std::atoi(argv[++i]);
    } else {
      std::fprintf(stderr, "usage: fp8d-gemm-bench [--tokens N] [--iters N]\n");
      return 2;
    }
  }
  if (tokens <= 0 || tokens % 16 != 0 || iters <= 0) {
    std::fprintf(stderr, "--tokens must be a positive multiple of 16, --iters positive\n");
    return 2;
  }
  cudaDeviceProp prop{};
  Check(cudaGetDeviceProperties(&prop, 0), "cudaGetDeviceProperties");

  int64_t max_n = 0, max_k = 0;
  for (const LayerShape& s : kShapes) {
    max_n = std::max(max_n, s.n);
    max_k = std::max(max_k, s.k);
  }
  void *workspace, *x16, *w16, *y, *x8, *w8, *scales;
  Check(cudaMalloc(&workspace, fp8d::kernels::kGemmWorkspaceBytes), "cudaMalloc");
  Check(cudaMalloc(&x16, tokens * max_k * 2), "cudaMalloc");
  Check(cudaMalloc(&w16, max_n * max_k * 2), "cudaMalloc");
  Check(cudaMalloc(&y, tokens * max_n * 2), "cudaMalloc");
  Check(cudaMalloc(&x8, tokens * max_k), "cudaMalloc");
  Check(cudaMalloc(&w8, max_n * max_k), "cudaMalloc");
  const int64_t max_scales = std::max(tokens, max_n) * fp8d::kernels::Fp8KBlocks(max_k);
  Check(cudaMalloc(&scales, max_scales * sizeof(float)), "cudaMalloc");
  // Values do not change the speed; keep them finite: BF16 0x3F3F ~ 0.75, E4M3 0x38 = 1.
  Check(cudaMemset(x16, 0x3F, tokens * max_k * 2), "cudaMemset");
  Check(cudaMemset(w16, 0x3F, max_n * max_k * 2), "cudaMemset");
  Check(cudaMemset(x8, 0x38, tokens * max_k), "cudaMemset");
  Check(cudaMemset(w8, 0x38, max_n * max_k), "cudaMemset");
  {
    std::vector<float> ones(max_scales, 1.f);
    Check(cudaMemcpy(scales, ones.data(), max_scales * sizeof(float), cudaMemcpyHostToDevice),
          "cudaMemcpy");
  }

  auto bf16 = GemmRunner::Create(workspace, fp8d::kernels::kGemmWorkspaceBytes);
  auto fp8 = Fp8GemmRunner::Create(workspace, fp8d::kernels::kGemmWorkspaceBytes);
  if (!bf16.ok()) Die(bf16.status());
  if (!fp8.ok()) Die(fp8.status());

  std::printf("fp8d-gemm-bench on %s, tokens=%lld, %d iterations (ms per GEMM, TFLOP/s)\n",
              prop.name, static_cast<long long>(tokens), iters);
  std::printf("%-5s %-9s %6s %6s | %-16s | %-16s | %-16s | %-16s | %s\n", "model", "layer", "n",
              "k", "bf16", "fp8", "fp8-split", "fp8-1x128", "fp8/bf16");
  for (const LayerShape& s : kShapes) {
    const GemmShape shape{tokens, s.n, s.k};
    const double flops = 2.0 * tokens * s.n * s.k;
    GemmConfig bc;
    bc.trans_b = true;
    const double bf16_ms = TimeMs(
        [&] {
          const absl::Status st = (*bf16)->Run(bc, shape, x16, w16, y, nullptr);
          if (!st.ok()) Die(st);
        },
        warmup, iters);
    auto fp8_ms = [&](Fp8ScaleMode mode, bool fast) {
      Fp8GemmConfig fc;
      fc.scale_mode = mode;
      fc.fast_accum = fast;
      fc.x_scale_inv = static_cast<const float*>(scales);
      fc.w_scale_inv = static_cast<const float*>(scales);
      return TimeMs(
          [&] {
            const absl::Status st =
                (*fp8)->Run(fc, shape, static_cast<const uint8_t*>(x8),
                            static_cast<const uint8_t*>(w8), y, nullptr);
            if (!st.ok()) Die(st);
          },
          warmup, iters);
    };
    const double fast_ms = fp8_ms(Fp8ScaleMode::kTensor, true);
    const double split_ms = fp8_ms(Fp8ScaleMode::kTensor, false);
    const double block_ms = fp8_ms(Fp8ScaleMode::kBlock1x128, false);
    auto tf = [&](double ms) { return flops / (ms * 1e-3) / 1e12; };
    std::printf(
        "%-5s %-9s %6lld %6lld | %7.4f %7.1f | %7.4f %7.1f | %7.4f %7.1f | %7.4f %7.1f | %.2fx\n",
        s.model, s.name, static_cast<long long>(s.n), static_cast<long long>(s.k), bf16_ms,
        tf(bf16_ms), fast_ms, tf(fast_ms), split_ms, tf(split_ms), block_ms, tf(block_ms),
        bf16_ms / fast_ms);
  }
  Check(cudaDeviceSynchronize(), "cudaDeviceSynchronize");
  return 0;
}
