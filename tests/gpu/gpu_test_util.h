// Shared pieces of the GPU tests: skipping visibly without a device, device buffers that poison
// themselves with NaN, seeded random inputs, BF16 rounding on the host, and an element-wise
// comparison that names the first elements out of tolerance.
#pragma once

#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <string>
#include <vector>

#include "core/rng.h"
#include "gtest/gtest.h"

namespace fp8d::testing {

// Relative tolerance for outputs computed in FP32 from BF16 inputs and rounded to BF16
// (one BF16 rounding is 2^-9 relative; the rest is FP32 summation order).
constexpr float kBf16RelTol = 1e-2f;
// Absolute slack for BF16 outputs, as a fraction of the tensor's largest magnitude: covers
// elements near zero that come out of cancelling FP32 sums.
constexpr float kBf16AbsTolFraction = 1e-3f;
// FP32 outputs from FP32 inputs: only summation order and libm ulps differ (the absolute part
// covers sums whose terms cancel).
constexpr float kFp32RelTol = 1e-5f;
constexpr float kFp32AbsTolFraction = 1e-5f;

inline bool GpuAvailable() {
  int count = 0;
  return cudaGetDeviceCount(&count) == cudaSuccess && count > 0;
}

// Use first in a test body: without a GPU the test reports SKIPPED, never a vacuous pass.
#define FP8D_REQUIRE_GPU()                                   \
  do {                                                       \
    if (!::fp8d::testing::GpuAvailable()) {                  \
      GTEST_SKIP() << "no CUDA device";                      \
    }                                                        \
  } while (0)

// Fixture base for GPU tests (plain and parameterised): SetUp skips without a device.
template <typename Param = int>
class GpuTest : public ::testing::TestWithParam<Param> {
 protected:
  void SetUp() override { FP8D_REQUIRE_GPU(); }
};

#define FP8D_TEST_CUDA(expr)                                                   \
  do {                                                                         \
    const cudaError_t fp8d_test_err_ = (expr);                                 \
    ASSERT_EQ(fp8d_test_err_, cudaSuccess)                                     \
        << #expr << ": " << cudaGetErrorString(fp8d_test_err_);                \
  } while (0)

// A device array of T that frees itself. Every byte starts as 0xFF, which is NaN for float and
// BF16 (and -1 for int32), so an element a kernel fails to write fails the comparison.
template <typename T>
class DeviceBuffer {
 public:
  explicit DeviceBuffer(size_t n) : n_(n) {
    if (n_ > 0 && cudaMalloc(&ptr_, n_ * sizeof(T)) != cudaSuccess) {
      ptr_ = nullptr;
      ADD_FAILURE() << "cudaMalloc of " << n_ * sizeof(T) << " bytes failed";
      return;
    }
    Poison();
  }
  explicit DeviceBuffer(const std::vector<T>& host) : DeviceBuffer(host.size()) { Upload(host); }
  DeviceBuffer(const DeviceBuffer&) = delete;
  DeviceBuffer& operator=(const DeviceBuffer&) = delete;
  ~DeviceBuffer() {
    if (ptr_ != nullptr) cudaFree(ptr_);
  }

  T* get() const { return ptr_; }
  size_t size() const { return n_; }
  size_t bytes() const { return n_ * sizeof(T); }

  void Poison() {
    if (ptr_ != nullptr) EXPECT_EQ(cudaMemset(ptr_, 0xFF, bytes()), cudaSuccess);
  }
  void Upload(const std::vector<T>& host) {
    ASSERT_EQ(host.size(), n_);
    if (n_ > 0) {
      ASSERT_EQ(cudaMemcpy(ptr_, host.data(), bytes(), cudaMemcpyHostToDevice), cudaSuccess);
    }
  }
  std::vector<T> Download() const {
    std::vector<T> host(n_);
    // Waits for the kernels before it (legacy default stream semantics for cudaMemcpy).
    EXPECT_EQ(cudaDeviceSynchronize(), cudaSuccess);
    if (n_ > 0) {
      EXPECT_EQ(cudaMemcpy(host.data(), ptr_, bytes(), cudaMemcpyDeviceToHost), cudaSuccess);
    }
    return host;
  }

 private:
  size_t n_ = 0;
  T* ptr_ = nullptr;
};

inline float RoundToBf16(float x) { return __bfloat162float(__float2bfloat16_rn(x)); }

inline std::vector<__nv_bfloat16> ToBf16(const std::vector<float>& x) {
  std::vector<__nv_bfloat16> out(x.size());
  for (size_t i = 0; i < x.size(); ++i) out[i] = __float2bfloat16_rn(x[i]);
  return out;
}

inline std::vector<float> ToFloat(const std::vector<__nv_bfloat16>& x) {
  std::vector<float> out(x.size());
  for (size_t i = 0; i < x.size(); ++i) out[i] = __bfloat162float(x[i]);
  return out;
}

// Normal(0, stddev) values; with `bf16_exact` they are rounded to BF16 so the same numbers can
// be fed to the GPU as BF16 and to the FP32 reference.
inline std::vector<float> RandomNormal(size_t n, uint64_t seed, float stddev = 1.f,
                                       bool bf16_exact = true) {
  Rng rng(seed);
  std::vector<float> x(n);
  for (float& v : x) {
    v = static_cast<float>(rng.NextNormal()) * stddev;
    if (bf16_exact) v = RoundToBf16(v);
  }
  return x;
}

inline std::vector<int32_t> RandomTokens(size_t n, int vocab, uint64_t seed) {
  Rng rng(seed);
  std::vector<int32_t> t(n);
  for (int32_t& v : t) v = static_cast<int32_t>(rng.NextBelow(static_cast<uint64_t>(vocab)));
  return t;
}

// |actual - expected| <= abs_fraction * max|expected| + rel_tol * |expected| for every element;
// NaN in `actual` (an unwritten, poisoned element) always fails. Reports the count and the
// first few offenders.
inline ::testing::AssertionResult AllClose(const std::vector<float>& actual,
                                           const std::vector<float>& expected, float rel_tol,
                                           float abs_fraction) {
  if (actual.size() != expected.size()) {
    return ::testing::AssertionFailure()
           << "size " << actual.size() << " != expected size " << expected.size();
  }
  float max_abs = 0.f;
  for (float e : expected) max_abs = std::max(max_abs, std::fabs(e));
  const float abs_tol = abs_fraction * max_abs;
  size_t bad = 0;
  std::string examples;
  for (size_t i = 0; i < actual.size(); ++i) {
    const float a = actual[i], e = expected[i];
    const bool ok = !std::isnan(a) && std::fabs(a - e) <= abs_tol + rel_tol * std::fabs(e);
    if (!ok) {
      if (bad < 5) {
        examples += " [" + std::to_string(i) + "] got " + std::to_string(a) + " want " +
                    std::to_string(e) + ";";
      }
      ++bad;
    }
  }
  if (bad == 0) return ::testing::AssertionSuccess();
  return ::testing::AssertionFailure() << bad << " of " << actual.size()
                                       << " elements out of tolerance (rel " << rel_tol
                                       << ", abs " << abs_tol << "):" << examples;
}

inline ::testing::AssertionResult Bf16Close(const std::vector<float>& actual,
                                            const std::vector<float>& expected) {
  return AllClose(actual, expected, kBf16RelTol, kBf16AbsTolFraction);
}

inline ::testing::AssertionResult Fp32Close(const std::vector<float>& actual,
                                            const std::vector<float>& expected) {
  return AllClose(actual, expected, kFp32RelTol, kFp32AbsTolFraction);
}

template <typename T>
bool SameBytes(const std::vector<T>& a, const std::vector<T>& b) {
  return a.size() == b.size() && std::memcmp(a.data(), b.data(), a.size() * sizeof(T)) == 0;
}

}  // namespace fp8d::testing
