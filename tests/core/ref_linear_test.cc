// The reference GEMMs against the plain triple loops they replace: bit-identical, on shapes that
// leave partial 4 x 4 blocks and on shapes large enough to run on several threads. The CPU
// engine is the oracle for the GPU and for checkpoints, so its sums must not depend on blocking
// or on the machine's thread count.
#include "core/ref/linear.h"

#include <cstdint>
#include <cstring>
#include <vector>

#include "core/rng.h"
#include "gtest/gtest.h"

namespace fp8d::ref {
namespace {

std::vector<float> Random(size_t n, uint64_t seed) {
  Rng rng(seed);
  std::vector<float> v(n);
  for (float& x : v) x = static_cast<float>(rng.NextNormal());
  return v;
}

struct Shape {
  int m, k, n;
};

class RefLinearTest : public ::testing::TestWithParam<Shape> {};

TEST_P(RefLinearTest, ForwardAndBackwardEqualThePlainLoopsBitForBit) {
  const auto [m, k, n] = GetParam();
  const std::vector<float> x = Random(size_t(m) * k, 1), w = Random(size_t(n) * k, 2),
                           dy = Random(size_t(m) * n, 3);

  std::vector<float> y(size_t(m) * n), want_y(size_t(m) * n);
  LinearForward(x.data(), w.data(), y.data(), m, k, n);
  for (int i = 0; i < m; ++i)
    for (int o = 0; o < n; ++o) {
      float acc = 0.f;
      for (int j = 0; j < k; ++j) acc += x[size_t(i) * k + j] * w[size_t(o) * k + j];
      want_y[size_t(i) * n + o] = acc;
    }
  EXPECT_EQ(std::memcmp(y.data(), want_y.data(), y.size() * 4), 0);

  std::vector<float> dx(size_t(m) * k, 7.f), want_dx(size_t(m) * k, 0.f);
  LinearBackwardInput(dy.data(), w.data(), dx.data(), m, k, n);
  for (int i = 0; i < m; ++i)
    for (int o = 0; o < n; ++o)
      for (int j = 0; j < k; ++j)
        want_dx[size_t(i) * k + j] += dy[size_t(i) * n + o] * w[size_t(o) * k + j];
  EXPECT_EQ(std::memcmp(dx.data(), want_dx.data(), dx.size() * 4), 0);

  // Accumulates into what is there.
  std::vector<float> dw = Random(size_t(n) * k, 4), want_dw = dw;
  LinearBackwardWeight(dy.data(), x.data(), dw.data(), m, k, n);
  for (int o = 0; o < n; ++o)
    for (int i = 0; i < m; ++i)
      for (int j = 0; j < k; ++j)
        want_dw[size_t(o) * k + j] += dy[size_t(i) * n + o] * x[size_t(i) * k + j];
  EXPECT_EQ(std::memcmp(dw.data(), want_dw.data(), dw.size() * 4), 0);
}

INSTANTIATE_TEST_SUITE_P(Shapes, RefLinearTest,
                         ::testing::Values(Shape{1, 1, 1}, Shape{7, 33, 13}, Shape{4, 16, 4},
                                           Shape{66, 97, 70},     // multi-threaded, ragged
                                           Shape{128, 256, 130}),
                         [](const ::testing::TestParamInfo<Shape>& info) {
                           return "M" + std::to_string(info.param.m) + "K" +
                                  std::to_string(info.param.k) + "N" +
                                  std::to_string(info.param.n);
                         });

}  // namespace
}  // namespace fp8d::ref
