#include "core/ref/linear.h"

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <vector>

namespace fp8d::ref {
namespace {

// Every output element is one sum whose terms are added in a fixed order, the order of the plain
// triple loop (tests/core/ref_linear_test.cc compares bit for bit). The loops below only change
// which sums run side by side: four neighbouring outputs share one SSE vector (x86-64's baseline,
// 16 registers) and up to eight rows or output features run in separate accumulators, so the
// adds no longer wait on each other's latency. Threads split rows (forward, input gradient) or output features (weight
// gradient), never a sum, so the results are the same for any thread count and any machine with
// IEEE FP32.
using F8 = float __attribute__((vector_size(16)));
constexpr int kLanes = 4;
constexpr int kBlock = 8;  // rows or output features per register block

inline F8 Load(const float* p) {
  F8 v;
  std::memcpy(&v, p, sizeof v);
  return v;
}
inline void Store(float* p, F8 v) { std::memcpy(p, &v, sizeof v); }
inline F8 Splat(float x) { return F8{x, x, x, x}; }
// The first `count` lanes of p (the rest zero) and back.
inline F8 LoadPartial(const float* p, int count) {
  float tmp[kLanes] = {};
  std::memcpy(tmp, p, sizeof(float) * count);
  return Load(tmp);
}
inline void StorePartial(float* p, F8 v, int count) {
  float tmp[kLanes];
  Store(tmp, v);
  std::memcpy(p, tmp, sizeof(float) * count);
}

// Below this many multiply-adds a GEMM runs on the calling thread: starting a parallel region
// costs more than it saves.
constexpr int64_t kParallelMacs = int64_t{1} << 18;

// y[i0 + r, o0 + c] for R rows and the outputs of `panel` (w rows o0.., transposed to [k][4]).
template <int R>
void ForwardRows(const float* x, const float* panel, float* y, int64_t k, int64_t n, int64_t i0,
                 int64_t o0, int width) {
  F8 acc[R] = {};
  const float* xr[R];
  for (int r = 0; r < R; ++r) xr[r] = x + (i0 + r) * k;
  for (int64_t j = 0; j < k; ++j) {
    const F8 wv = Load(panel + j * kLanes);
    for (int r = 0; r < R; ++r) acc[r] += Splat(xr[r][j]) * wv;
  }
  for (int r = 0; r < R; ++r) StorePartial(y + (i0 + r) * n + o0, acc[r], width);
}

// dx[i0 + r, j0 .. j0 + width) over all n output features in order.
template <int R>
void BackwardInputRows(const float* dy, const float* w, float* dx, int64_t k, int64_t n,
                       int64_t i0, int64_t j0, int width) {
  F8 acc[R] = {};
  for (int64_t o = 0; o < n; ++o) {
    const float* wr = w + o * k + j0;
    const F8 wv = width == kLanes ? Load(wr) : LoadPartial(wr, width);
    for (int r = 0; r < R; ++r) acc[r] += Splat(dy[(i0 + r) * n + o]) * wv;
  }
  for (int r = 0; r < R; ++r) StorePartial(dx + (i0 + r) * k + j0, acc[r], width);
}

// dw[o0 + r, j0 .. j0 + width) += the m tokens' products, added to what dw holds in token order.
template <int R>
void BackwardWeightRows(const float* dy, const float* x, float* dw, int64_t m, int64_t k,
                        int64_t n, int64_t o0, int64_t j0, int width) {
  F8 acc[R];
  for (int r = 0; r < R; ++r) acc[r] = LoadPartial(dw + (o0 + r) * k + j0, width);
  for (int64_t i = 0; i < m; ++i) {
    const float* xr = x + i * k + j0;
    const F8 xv = width == kLanes ? Load(xr) : LoadPartial(xr, width);
    for (int r = 0; r < R; ++r) acc[r] += Splat(dy[i * n + o0 + r]) * xv;
  }
  for (int r = 0; r < R; ++r) StorePartial(dw + (o0 + r) * k + j0, acc[r], width);
}

// Block<R>::Run(first, args...) with R = min(kBlock, count - first), R a compile-time constant
// so that the R accumulators live in registers.
template <template <int> class Block, typename... Args>
void RunBlock(int64_t first, int64_t count, Args... args) {
  switch (std::min<int64_t>(kBlock, count - first)) {
    case 8: Block<8>::Run(first, args...); break;
    case 7: Block<7>::Run(first, args...); break;
    case 6: Block<6>::Run(first, args...); break;
    case 5: Block<5>::Run(first, args...); break;
    case 4: Block<4>::Run(first, args...); break;
    case 3: Block<3>::Run(first, args...); break;
    case 2: Block<2>::Run(first, args...); break;
    default: Block<1>::Run(first, args...); break;
  }
}

template <int R>
struct ForwardBlock {
  static void Run(int64_t i0, const float* x, const float* panel, float* y, int64_t k, int64_t n,
                  int64_t o0, int width) {
    ForwardRows<R>(x, panel, y, k, n, i0, o0, width);
  }
};
template <int R>
struct BackwardInputBlock {
  static void Run(int64_t i0, const float* dy, const float* w, float* dx, int64_t k, int64_t n,
                  int64_t j0, int width) {
    BackwardInputRows<R>(dy, w, dx, k, n, i0, j0, width);
  }
};
template <int R>
struct BackwardWeightBlock {
  static void Run(int64_t o0, const float* dy, const float* x, float* dw, int64_t m, int64_t k,
                  int64_t n, int64_t j0, int width) {
    BackwardWeightRows<R>(dy, x, dw, m, k, n, o0, j0, width);
  }
};

}  // namespace

void LinearForward(const float* x, const float* w, float* y, int m, int k, int n) {
  const int64_t panels = (int64_t{n} + kLanes - 1) / kLanes;
#pragma omp parallel if (int64_t{m} * k * n >= kParallelMacs)
  {
    std::vector<float> panel(static_cast<size_t>(k) * kLanes);
#pragma omp for schedule(static)
    for (int64_t p = 0; p < panels; ++p) {
      // The panel's weight rows, transposed so one load gives its outputs' weights at j.
      const int64_t o0 = p * kLanes;
      const int width = static_cast<int>(std::min<int64_t>(kLanes, n - o0));
      std::fill(panel.begin(), panel.end(), 0.f);
      for (int c = 0; c < width; ++c) {
        const float* wr = w + (o0 + c) * int64_t{k};
        for (int64_t j = 0; j < k; ++j) panel[j * kLanes + c] = wr[j];
      }
      for (int64_t i0 = 0; i0 < m; i0 += kBlock) {
        RunBlock<ForwardBlock>(i0, m, x, panel.data(), y, int64_t{k}, int64_t{n}, o0, width);
      }
    }
  }
}

void LinearBackwardInput(const float* dy, const float* w, float* dx, int m, int k, int n) {
  const int64_t row_blocks = (int64_t{m} + kBlock - 1) / kBlock;
#pragma omp parallel for schedule(static) if (int64_t{m} * k * n >= kParallelMacs)
  for (int64_t b = 0; b < row_blocks; ++b) {
    for (int64_t j0 = 0; j0 < k; j0 += kLanes) {
      const int width = static_cast<int>(std::min<int64_t>(kLanes, k - j0));
      RunBlock<BackwardInputBlock>(kBlock * b, m, dy, w, dx, int64_t{k}, int64_t{n}, j0, width);
    }
  }
}

void LinearBackwardWeight(const float* dy, const float* x, float* dw, int m, int k, int n) {
  const int64_t feature_blocks = (int64_t{n} + kBlock - 1) / kBlock;
#pragma omp parallel for schedule(static) if (int64_t{m} * k * n >= kParallelMacs)
  for (int64_t b = 0; b < feature_blocks; ++b) {
    for (int64_t j0 = 0; j0 < k; j0 += kLanes) {
      const int width = static_cast<int>(std::min<int64_t>(kLanes, k - j0));
      RunBlock<BackwardWeightBlock>(kBlock * b, n, dy, x, dw, int64_t{m}, int64_t{k}, int64_t{n},
                                    j0, width);
    }
  }
}

}  // namespace fp8d::ref
