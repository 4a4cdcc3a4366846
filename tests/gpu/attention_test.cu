// Causal GQA attention three ways on the same fresh random inputs: cuDNN's fused flash graphs
// (kernels/attention_cudnn.h), the simple reference kernel (kernels/attention_reference.cuh) and
// the FP32 CPU reference (core/ref/attention.h). Outputs are poisoned with NaN first so an
// unwritten element fails; the cuDNN backward must also be bit-reproducible.
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <cmath>
#include <random>
#include <string>
#include <vector>

#include "core/ref/attention.h"
#include "gtest/gtest.h"
#include "kernels/attention_cudnn.h"
#include "kernels/attention_reference.cuh"

namespace fp8d::kernels {
namespace {

bool HaveGpu() {
  int n = 0;
  return cudaGetDeviceCount(&n) == cudaSuccess && n > 0;
}

#define SKIP_WITHOUT_GPU() \
  if (!HaveGpu()) GTEST_SKIP() << "no CUDA GPU on this machine"

// BF16 inputs and outputs with FP32 softmax: errors of a few BF16 ulps (2^-8) of the values'
// scale; gradients pass through one more BF16 rounding (P or dS) inside the flash kernels.
constexpr double kForwardTol = 2e-2;
constexpr double kBackwardTol = 4e-2;

struct Case {
  int batch, seq, heads, kv_heads, head_dim;
};

std::string Name(const testing::TestParamInfo<Case>& info) {
  const Case& c = info.param;
  return "B" + std::to_string(c.batch) + "T" + std::to_string(c.seq) + "H" +
         std::to_string(c.heads) + "KV" + std::to_string(c.kv_heads) + "D" +
         std::to_string(c.head_dim);
}

// Device buffer of BF16 with its FP32 host image (the values the BF16 buffer holds).
struct Bf16Buffer {
  std::vector<float> host;
  __nv_bfloat16* dev = nullptr;
  Bf16Buffer(size_t n, std::mt19937& gen, float scale) : host(n) {
    std::normal_distribution<float> dist(0.f, scale);
    std::vector<__nv_bfloat16> b(n);
    for (size_t i = 0; i < n; ++i) {
      b[i] = __float2bfloat16(dist(gen));
      host[i] = __bfloat162float(b[i]);
    }
    cudaMalloc(&dev, n * 2);
    cudaMemcpy(dev, b.data(), n * 2, cudaMemcpyHostToDevice);
  }
  explicit Bf16Buffer(size_t n) : host(n) {
    cudaMalloc(&dev, n * 2);
    cudaMemset(dev, 0xFF, n * 2);  // NaN
  }
  ~Bf16Buffer() { cudaFree(dev); }
  std::vector<float> Read() const {
    std::vector<__nv_bfloat16> b(host.size());
    cudaMemcpy(b.data(), dev, b.size() * 2, cudaMemcpyDeviceToHost);
    std::vector<float> out(b.size());
    for (size_t i = 0; i < b.size(); ++i) out[i] = __bfloat162float(b[i]);
    return out;
  }
};

// ||got - want|| / ||want||; NaN anywhere fails.
double RelError(const std::vector<float>& got, const std::vector<float>& want) {
  double num = 0, den = 0;
  for (size_t i = 0; i < got.size(); ++i) {
    if (!std::isfinite(got[i])) return INFINITY;
    num += (double(got[i]) - want[i]) * (double(got[i]) - want[i]);
    den += double(want[i]) * want[i];
  }
  return std::sqrt(num / std::max(den, 1e-30));
}

class AttentionTest : public testing::TestWithParam<Case> {};

TEST_P(AttentionTest, CudnnAndReferenceKernelMatchTheCpuReference) {
  SKIP_WITHOUT_GPU();
  const Case c = GetParam();
  const int d_model = c.heads * c.head_dim, kv_dim = c.kv_heads * c.head_dim;
  const int qkv_stride = d_model + 2 * kv_dim;
  const size_t rows = size_t(c.batch) * c.seq;
  std::mt19937 gen(c.batch * 1000 + c.seq + c.heads * 7 + c.head_dim);
  Bf16Buffer qkv(rows * qkv_stride, gen, 1.f), dout(rows * d_model, gen, 1.f);

  AttentionDims dims{c.batch, c.seq, c.heads, c.kv_heads, c.head_dim, qkv_stride};
  ref::AttentionShape rs{c.batch, c.seq, c.heads, c.kv_heads, c.head_dim, qkv_stride};
  const float* hq = qkv.host.data();
  std::vector<float> want_out(rows * d_model), want_lse(size_t(c.batch) * c.heads * c.seq);
  ref::AttentionForward(hq, hq + d_model, hq + d_model + kv_dim, want_out.data(),
                        want_lse.data(), rs);
  // Backward from the CPU's own forward output; the GPU paths use theirs.
  std::vector<float> want_dqkv(rows * qkv_stride, 0.f);
  ref::AttentionBackward(dout.host.data(), hq, hq + d_model, hq + d_model + kv_dim,
                         want_out.data(), want_lse.data(), want_dqkv.data(),
                         want_dqkv.data() + d_model, want_dqkv.data() + d_model + kv_dim, rs);

  cudaStream_t stream;
  cudaStreamCreate(&stream);
  auto cudnn = CudnnAttention::Create(stream);
  ASSERT_TRUE(cudnn.ok()) << cudnn.status();
  absl::StatusOr<size_t> ws_bytes = (*cudnn)->Prepare(dims);
  ASSERT_TRUE(ws_bytes.ok()) << "cuDNN could not build the attention graphs: "
                             << ws_bytes.status();
  const size_t ref_ws = ReferenceAttentionBackwardWorkspaceBytes(dims);
  void* ws = nullptr;
  cudaMalloc(&ws, std::max(*ws_bytes, ref_ws) + 256);
  float* lse = nullptr;
  cudaMalloc(&lse, want_lse.size() * 4);

  for (const bool use_cudnn : {true, false}) {
    SCOPED_TRACE(use_cudnn ? "cudnn" : "reference kernel");
    Bf16Buffer out(rows * d_model), dqkv(rows * qkv_stride);
    cudaMemset(lse, 0xFF, want_lse.size() * 4);
    const __nv_bfloat16* q = qkv.dev;
    if (use_cudnn) {
      ASSERT_TRUE((*cudnn)
                      ->Forward(out.dev, lse, q, q + d_model, q + d_model + kv_dim, dims, ws,
                                *ws_bytes)
                      .ok());
    } else {
      ReferenceAttentionForward(stream, out.dev, lse, q, q + d_model, q + d_model + kv_dim, dims);
    }
    ASSERT_EQ(cudaStreamSynchronize(stream), cudaSuccess);
    EXPECT_LT(RelError(out.Read(), want_out), kForwardTol);
    std::vector<float> got_lse(want_lse.size());
    cudaMemcpy(got_lse.data(), lse, got_lse.size() * 4, cudaMemcpyDeviceToHost);
    EXPECT_LT(RelError(got_lse, want_lse), 1e-2);

    auto backward = [&](Bf16Buffer& grad) {
      __nv_bfloat16* dq = grad.dev;
      if (use_cudnn) {
        EXPECT_TRUE((*cudnn)
                        ->Backward(dq, dq + d_model, dq + d_model + kv_dim, dout.dev, q,
                                   q + d_model, q + d_model + kv_dim, out.dev, lse, dims, ws,
                                   *ws_bytes)
                        .ok());
      } else {
        ReferenceAttentionBackward(stream, dq, dq + d_model, dq + d_model + kv_dim, dout.dev, q,
                                   q + d_model, q + d_model + kv_dim, out.dev, lse, dims, ws,
                                   ref_ws);
      }
      cudaStreamSynchronize(stream);
    };
    backward(dqkv);
    const std::vector<float> got = dqkv.Read();
    EXPECT_LT(RelError(got, want_dqkv), kBackwardTol);
    // Same inputs, same bits.
    Bf16Buffer again(rows * qkv_stride);
    backward(again);
    EXPECT_EQ(again.Read(), got);
  }
  EXPECT_EQ((*cudnn)->cached_graphs(), 2u);
  cudaFree(ws);
  cudaFree(lse);
  cudaStreamDestroy(stream);
}

INSTANTIATE_TEST_SUITE_P(Shapes, AttentionTest,
                         testing::Values(Case{2, 64, 4, 2, 16},     // tiny preset's heads
                                         Case{1, 128, 12, 12, 64},  // 124m heads, MHA
                                         Case{2, 96, 8, 2, 64},     // GQA, seq not a tile size
                                         Case{1, 256, 4, 1, 128}),  // MQA, 1b head_dim
                         Name);

}  // namespace
}  // namespace fp8d::kernels
