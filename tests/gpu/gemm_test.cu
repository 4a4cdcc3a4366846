// cuBLASLt GEMM runner against a double-precision CPU product on fresh random BF16 inputs, over
// shapes x transposes x output types, with the output poisoned so an unwritten element fails.
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <cmath>
#include <cstdint>
#include <limits>
#include <random>
#include <string>
#include <tuple>
#include <vector>

#include "gtest/gtest.h"
#include "kernels/gemm.h"

namespace fp8d::kernels {
namespace {

bool HaveGpu() {
  int n = 0;
  return cudaGetDeviceCount(&n) == cudaSuccess && n > 0;
}

#define SKIP_WITHOUT_GPU() \
  if (!HaveGpu()) GTEST_SKIP() << "no CUDA GPU on this machine"

// BF16 inputs are exact in the reference; the error is FP32 accumulation order plus the final
// rounding of D: one BF16 ulp (2^-8 relative) of the largest |partial sum| for BF16 outputs.
constexpr double kBf16OutRelTol = 1.0 / 128;
constexpr double kF32OutRelTol = 1e-5;

struct GemmCase {
  int64_t m, n, k;
  bool trans_a, trans_b;
  bool f32_out;
  bool accumulate;
  bool separate_c = false;  // with accumulate: C is its own buffer (D = AB + C), D poisoned
};

std::string Name(const testing::TestParamInfo<GemmCase>& info) {
  const GemmCase& c = info.param;
  return "m" + std::to_string(c.m) + "n" + std::to_string(c.n) + "k" + std::to_string(c.k) +
         (c.trans_a ? "_TA" : "_NA") + (c.trans_b ? "_TB" : "_NB") +
         (c.f32_out ? "_F32" : "_BF16") + (c.accumulate ? "_acc" : "") +
         (c.separate_c ? "_sepC" : "");
}

class GemmTest : public testing::TestWithParam<GemmCase> {};

TEST_P(GemmTest, MatchesCpuProduct) {
  SKIP_WITHOUT_GPU();
  const GemmCase& c = GetParam();
  std::mt19937 gen(1234 + c.m * 7 + c.n * 13 + c.k);
  std::normal_distribution<float> dist(0.f, 1.f);
  // A is op(A) [m, k] stored [m, k] or [k, m]; B is op(B) [k, n] stored [k, n] or [n, k].
  std::vector<__nv_bfloat16> a(c.m * c.k), b(c.k * c.n);
  std::vector<float> af(a.size()), bf(b.size());
  for (size_t i = 0; i < a.size(); ++i) {
    a[i] = __float2bfloat16(dist(gen));
    af[i] = __bfloat162float(a[i]);
  }
  for (size_t i = 0; i < b.size(); ++i) {
    b[i] = __float2bfloat16(dist(gen));
    bf[i] = __bfloat162float(b[i]);
  }
  auto A = [&](int64_t i, int64_t kk) { return c.trans_a ? af[kk * c.m + i] : af[i * c.k + kk]; };
  auto B = [&](int64_t kk, int64_t j) { return c.trans_b ? bf[j * c.k + kk] : bf[kk * c.n + j]; };
  std::vector<float> prior(c.m * c.n, 0.f);
  if (c.accumulate)
    for (float& p : prior) p = dist(gen);

  const size_t elem = c.f32_out ? 4 : 2;
  void *da, *db, *dd, *ws, *dc = nullptr;
  ASSERT_EQ(cudaMalloc(&da, a.size() * 2), cudaSuccess);
  ASSERT_EQ(cudaMalloc(&db, b.size() * 2), cudaSuccess);
  ASSERT_EQ(cudaMalloc(&dd, c.m * c.n * elem), cudaSuccess);
  ASSERT_EQ(cudaMalloc(&ws, kGemmWorkspaceBytes), cudaSuccess);
  cudaMemcpy(da, a.data(), a.size() * 2, cudaMemcpyHostToDevice);
  cudaMemcpy(db, b.data(), b.size() * 2, cudaMemcpyHostToDevice);
  if (c.accumulate) {
    if (c.f32_out) {
      cudaMemcpy(dd, prior.data(), prior.size() * 4, cudaMemcpyHostToDevice);
    } else {
      std::vector<__nv_bfloat16> pb(prior.size());
      for (size_t i = 0; i < pb.size(); ++i) {
        pb[i] = __float2bfloat16(prior[i]);
        prior[i] = __bfloat162float(pb[i]);
      }
      cudaMemcpy(dd, pb.data(), pb.size() * 2, cudaMemcpyHostToDevice);
    }
    if (c.separate_c) {  // the prior moves to its own buffer; D must be fully written
      ASSERT_EQ(cudaMalloc(&dc, c.m * c.n * elem), cudaSuccess);
      cudaMemcpy(dc, dd, c.m * c.n * elem, cudaMemcpyDeviceToDevice);
      cudaMemset(dd, 0xFF, c.m * c.n * elem);
    }
  } else {
    cudaMemset(dd, 0xFF, c.m * c.n * elem);  // NaN in both BF16 and FP32
  }

  auto runner = GemmRunner::Create(ws, kGemmWorkspaceBytes);
  ASSERT_TRUE(runner.ok()) << runner.status();
  GemmConfig cfg;
  cfg.trans_a = c.trans_a;
  cfg.trans_b = c.trans_b;
  cfg.c_type = c.f32_out ? CUDA_R_32F : CUDA_R_16BF;
  cfg.beta = c.accumulate ? 1.f : 0.f;
  ASSERT_TRUE((*runner)->Run(cfg, {c.m, c.n, c.k}, da, db, dd, nullptr, dc).ok());
  ASSERT_EQ(cudaDeviceSynchronize(), cudaSuccess);

  std::vector<float> got(c.m * c.n);
  if (c.f32_out) {
    cudaMemcpy(got.data(), dd, got.size() * 4, cudaMemcpyDeviceToHost);
  } else {
    std::vector<__nv_bfloat16> gb(got.size());
    cudaMemcpy(gb.data(), dd, gb.size() * 2, cudaMemcpyDeviceToHost);
    for (size_t i = 0; i < gb.size(); ++i) got[i] = __bfloat162float(gb[i]);
  }
  const double tol = c.f32_out ? kF32OutRelTol : kBf16OutRelTol;
  int bad = 0;
  for (int64_t i = 0; i < c.m; ++i) {
    for (int64_t j = 0; j < c.n; ++j) {
      double want = prior[i * c.n + j], scale = std::fabs(want);
      for (int64_t kk = 0; kk < c.k; ++kk) {
        const double t = double(A(i, kk)) * B(kk, j);
        want += t;
        scale += std::fabs(t);
      }
      const double g = got[i * c.n + j];
      if (!(std::fabs(g - want) <= tol * scale + 1e-6) && bad++ < 5) {
        ADD_FAILURE() << "D[" << i << ", " << j << "] = " << g << ", want " << want;
      }
    }
  }
  EXPECT_EQ(bad, 0);
  cudaFree(da), cudaFree(db), cudaFree(dd), cudaFree(ws), cudaFree(dc);
}

std::vector<GemmCase> Cases() {
  std::vector<GemmCase> out;
  for (auto [m, n, k] : {std::tuple<int64_t, int64_t, int64_t>{64, 64, 64},
                         {128, 192, 64},
                         {37, 53, 29},     // odd sizes: no tile alignment to hide behind
                         {256, 768, 512}}) {
    for (bool ta : {false, true})
      for (bool tb : {false, true}) out.push_back({m, n, k, ta, tb, false, false});
    out.push_back({m, n, k, true, false, true, true});   // weight gradient: FP32, accumulate
    out.push_back({m, n, k, false, true, true, false});
    out.push_back({m, n, k, false, false, false, true});
    out.push_back({m, n, k, false, true, false, true, true});  // Linear + residual epilogue
  }
  return out;
}

INSTANTIATE_TEST_SUITE_P(Shapes, GemmTest, testing::ValuesIn(Cases()), Name);

TEST(GemmRunnerTest, CachesOnePlanPerDescriptor) {
  SKIP_WITHOUT_GPU();
  void *ws, *a, *b, *d;
  ASSERT_EQ(cudaMalloc(&ws, kGemmWorkspaceBytes), cudaSuccess);
  ASSERT_EQ(cudaMalloc(&a, 64 * 64 * 2), cudaSuccess);
  ASSERT_EQ(cudaMalloc(&b, 64 * 64 * 2), cudaSuccess);
  ASSERT_EQ(cudaMalloc(&d, 64 * 64 * 4), cudaSuccess);
  auto runner = GemmRunner::Create(ws, kGemmWorkspaceBytes);
  ASSERT_TRUE(runner.ok());
  GemmConfig cfg;
  ASSERT_TRUE((*runner)->Run(cfg, {64, 64, 64}, a, b, d, nullptr).ok());
  ASSERT_TRUE((*runner)->Run(cfg, {64, 64, 64}, a, b, d, nullptr).ok());
  EXPECT_EQ((*runner)->cached_plans(), 1u);
  cfg.trans_b = true;
  ASSERT_TRUE((*runner)->Run(cfg, {64, 64, 64}, a, b, d, nullptr).ok());
  cfg.c_type = CUDA_R_32F;
  cfg.beta = 1.f;
  ASSERT_TRUE((*runner)->Run(cfg, {64, 64, 64}, a, b, d, nullptr).ok());
  EXPECT_EQ((*runner)->cached_plans(), 3u);
  EXPECT_EQ((*runner)->Run(cfg, {0, 64, 64}, a, b, d, nullptr).code(),
            absl::StatusCode::kInvalidArgument);
  cudaDeviceSynchronize();
  cudaFree(ws), cudaFree(a), cudaFree(b), cudaFree(d);
}

// The three GEMMs of a Linear layer restricted to a block of output columns [c0, c0 + w) of a
// wider Y [m, n] (the Q and K columns of the fused QKV projection), read and written in place
// through row strides: Y's other columns stay untouched, dX accumulates, dW's rows are offset.
TEST(GemmRunnerTest, RowStridesReadAndWriteAColumnBlockInPlace) {
  SKIP_WITHOUT_GPU();
  const int64_t m = 96, k = 64, n = 192, c0 = 32, w = 128;
  std::mt19937 gen(99);
  std::normal_distribution<float> dist(0.f, 1.f);
  auto random_bf16 = [&](size_t count, std::vector<float>* exact) {
    std::vector<__nv_bfloat16> v(count);
    exact->resize(count);
    for (size_t i = 0; i < count; ++i) {
      v[i] = __float2bfloat16(dist(gen));
      (*exact)[i] = __bfloat162float(v[i]);
    }
    return v;
  };
  std::vector<float> xf, wf, dyf, dx0f;
  const auto x = random_bf16(m * k, &xf), wt = random_bf16(n * k, &wf);
  const auto dy = random_bf16(m * n, &dyf), dx0 = random_bf16(m * k, &dx0f);
  std::vector<float> dw0(n * k);
  for (float& v : dw0) v = dist(gen);

  void *dx_in, *dw_in, *ddy, *dy_out, *ddx, *ddw, *ws;
  ASSERT_EQ(cudaMalloc(&dx_in, m * k * 2), cudaSuccess);
  ASSERT_EQ(cudaMalloc(&dw_in, n * k * 2), cudaSuccess);
  ASSERT_EQ(cudaMalloc(&ddy, m * n * 2), cudaSuccess);
  ASSERT_EQ(cudaMalloc(&dy_out, m * n * 2), cudaSuccess);
  ASSERT_EQ(cudaMalloc(&ddx, m * k * 2), cudaSuccess);
  ASSERT_EQ(cudaMalloc(&ddw, n * k * 4), cudaSuccess);
  ASSERT_EQ(cudaMalloc(&ws, kGemmWorkspaceBytes), cudaSuccess);
  cudaMemcpy(dx_in, x.data(), m * k * 2, cudaMemcpyHostToDevice);
  cudaMemcpy(dw_in, wt.data(), n * k * 2, cudaMemcpyHostToDevice);
  cudaMemcpy(ddy, dy.data(), m * n * 2, cudaMemcpyHostToDevice);
  cudaMemset(dy_out, 0xFF, m * n * 2);  // NaN: the columns outside the block must stay so
  cudaMemcpy(ddx, dx0.data(), m * k * 2, cudaMemcpyHostToDevice);
  cudaMemcpy(ddw, dw0.data(), n * k * 4, cudaMemcpyHostToDevice);
  auto runner = GemmRunner::Create(ws, kGemmWorkspaceBytes);
  ASSERT_TRUE(runner.ok()) << runner.status();

  GemmConfig fwd;  // Y[:, c0:c0+w] = X W[c0:c0+w]^T
  fwd.trans_b = true;
  fwd.ldd = n;
  ASSERT_TRUE((*runner)->Run(fwd, {m, w, k}, dx_in, static_cast<__nv_bfloat16*>(dw_in) + c0 * k,
                             static_cast<__nv_bfloat16*>(dy_out) + c0, nullptr).ok());
  GemmConfig dgrad;  // dX += dY[:, c0:c0+w] W[c0:c0+w]
  dgrad.lda = n;
  dgrad.beta = 1.f;
  ASSERT_TRUE((*runner)->Run(dgrad, {m, k, w}, static_cast<__nv_bfloat16*>(ddy) + c0,
                             static_cast<__nv_bfloat16*>(dw_in) + c0 * k, ddx, nullptr).ok());
  GemmConfig wgrad;  // dW[c0:c0+w] += dY[:, c0:c0+w]^T X (FP32)
  wgrad.trans_a = true;
  wgrad.lda = n;
  wgrad.c_type = CUDA_R_32F;
  wgrad.beta = 1.f;
  ASSERT_TRUE((*runner)->Run(wgrad, {w, k, m}, static_cast<__nv_bfloat16*>(ddy) + c0, dx_in,
                             static_cast<float*>(ddw) + c0 * k, nullptr).ok());
  GemmConfig too_narrow;
  too_narrow.trans_b = true;
  too_narrow.ldd = w - 16;
  EXPECT_EQ((*runner)->Run(too_narrow, {m, w, k}, dx_in, dw_in, dy_out, nullptr).code(),
            absl::StatusCode::kInvalidArgument);
  ASSERT_EQ(cudaDeviceSynchronize(), cudaSuccess);

  std::vector<__nv_bfloat16> y_got(m * n), dx_got(m * k);
  std::vector<float> dw_got(n * k);
  cudaMemcpy(y_got.data(), dy_out, m * n * 2, cudaMemcpyDeviceToHost);
  cudaMemcpy(dx_got.data(), ddx, m * k * 2, cudaMemcpyDeviceToHost);
  cudaMemcpy(dw_got.data(), ddw, n * k * 4, cudaMemcpyDeviceToHost);
  int bad = 0;
  auto check = [&](const char* what, int64_t i, int64_t j, double got, double want, double scale,
                   double tol) {
    if (!(std::fabs(got - want) <= tol * scale + 1e-6) && bad++ < 5) {
      ADD_FAILURE() << what << "[" << i << ", " << j << "] = " << got << ", want " << want;
    }
  };
  for (int64_t i = 0; i < m; ++i) {
    for (int64_t j = 0; j < n; ++j) {
      const float got = __bfloat162float(y_got[i * n + j]);
      if (j < c0 || j >= c0 + w) {
        if (!std::isnan(got) && bad++ < 5) ADD_FAILURE() << "Y[" << i << ", " << j << "] written";
        continue;
      }
      double want = 0, scale = 0;
      for (int64_t kk = 0; kk < k; ++kk) {
        want += double(xf[i * k + kk]) * wf[j * k + kk];
        scale += std::fabs(double(xf[i * k + kk]) * wf[j * k + kk]);
      }
      check("Y", i, j, got, want, scale, kBf16OutRelTol);
    }
    for (int64_t kk = 0; kk < k; ++kk) {
      double want = dx0f[i * k + kk], scale = std::fabs(want);
      for (int64_t j = c0; j < c0 + w; ++j) {
        want += double(dyf[i * n + j]) * wf[j * k + kk];
        scale += std::fabs(double(dyf[i * n + j]) * wf[j * k + kk]);
      }
      check("dX", i, kk, __bfloat162float(dx_got[i * k + kk]), want, scale, kBf16OutRelTol);
    }
  }
  for (int64_t j = 0; j < n; ++j) {
    for (int64_t kk = 0; kk < k; ++kk) {
      double want = dw0[j * k + kk], scale = std::fabs(want);
      if (j >= c0 && j < c0 + w) {
        for (int64_t i = 0; i < m; ++i) {
          want += double(dyf[i * n + j]) * xf[i * k + kk];
          scale += std::fabs(double(dyf[i * n + j]) * xf[i * k + kk]);
        }
      }
      check("dW", j, kk, dw_got[j * k + kk], want, scale, kF32OutRelTol);
    }
  }
  EXPECT_EQ(bad, 0);
  cudaFree(dx_in), cudaFree(dw_in), cudaFree(ddy), cudaFree(dy_out), cudaFree(ddx);
  cudaFree(ddw), cudaFree(ws);
}

}  // namespace
}  // namespace fp8d::kernels
