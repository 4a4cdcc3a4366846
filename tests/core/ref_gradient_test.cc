// Finite-difference checks of the FP32 reference ops' backward passes, and of the whole model's
// gradient, plus behaviour checks of the ops that have no useful derivative (AdamW, norm, FP8).
#include <cmath>
#include <cstdint>
#include <functional>
#include <numeric>
#include <vector>

#include "core/cpu_model.h"
#include "core/fp8_quantize.h"
#include "core/model_weights.h"
#include "core/ref/adamw.h"
#include "core/ref/attention.h"
#include "core/ref/cross_entropy.h"
#include "core/ref/embedding.h"
#include "core/ref/fp8_linear.h"
#include "core/ref/grad_norm.h"
#include "core/ref/linear.h"
#include "core/ref/rmsnorm.h"
#include "core/ref/rope.h"
#include "core/ref/swiglu.h"
#include "core/rng.h"
#include "gtest/gtest.h"

namespace fp8d {
namespace {

// Central differences on FP32 functions: a step of 1e-2 keeps the rounding error of an O(1)
// objective near 1e-5 while the truncation error (h^2 f''') stays below 1e-4 for these ops.
constexpr double kStep = 1e-2;
constexpr double kRelTol = 1e-2;
constexpr double kAbsTol = 5e-4;

std::vector<float> RandomVector(size_t n, uint64_t seed, double scale = 1.0) {
  Rng rng(seed);
  std::vector<float> v(n);
  for (float& x : v) x = static_cast<float>(rng.NextNormal() * scale);
  return v;
}

// sum_i y[i] * r[i] in double: a scalar whose gradient w.r.t. y is r.
double Dot(const std::vector<float>& y, const std::vector<float>& r) {
  double s = 0.0;
  for (size_t i = 0; i < y.size(); ++i) s += static_cast<double>(y[i]) * r[i];
  return s;
}

// Compares analytic[i] with the central difference of `objective` in x[i], for every i.
// Also requires the gradient to be non-trivial, so that a backward pass writing zeros fails.
void ExpectGradient(const char* what, std::vector<float>* x, const std::vector<float>& analytic,
                    const std::function<double()>& objective) {
  ASSERT_EQ(x->size(), analytic.size()) << what;
  double max_abs = 0.0;
  for (size_t i = 0; i < x->size(); ++i) {
    const float saved = (*x)[i];
    const float plus = saved + static_cast<float>(kStep);
    const float minus = saved - static_cast<float>(kStep);
    (*x)[i] = plus;
    const double f_plus = objective();
    (*x)[i] = minus;
    const double f_minus = objective();
    (*x)[i] = saved;
    const double numeric = (f_plus - f_minus) / (static_cast<double>(plus) - minus);
    const double a = analytic[i];
    max_abs = std::max(max_abs, std::fabs(a));
    EXPECT_NEAR(a, numeric, kAbsTol + kRelTol * std::max(std::fabs(a), std::fabs(numeric)))
        << what << "[" << i << "]";
  }
  EXPECT_GT(max_abs, 1e-2) << what << ": gradient is trivially small";
}

TEST(RefEmbedding, BackwardMatchesFiniteDifferenceWithRepeatedTokens) {
  const int vocab = 7, dim = 5;
  const std::vector<int32_t> tokens = {3, 1, 3, 6, 0, 3};
  const int n = tokens.size();
  std::vector<float> table = RandomVector(vocab * dim, 1);
  const std::vector<float> r = RandomVector(n * dim, 2);
  std::vector<float> out(n * dim);
  auto objective = [&] {
    ref::EmbeddingForward(tokens.data(), table.data(), out.data(), n, dim);
    return Dot(out, r);
  };
  objective();
  EXPECT_EQ(out[2 * dim + 4], table[3 * dim + 4]);
  std::vector<float> dtable(vocab * dim, 0.f);
  ref::EmbeddingBackward(tokens.data(), r.data(), dtable.data(), n, dim);
  ExpectGradient("dtable", &table, dtable, objective);
}

TEST(RefRmsNorm, BackwardMatchesFiniteDifference) {
  const int rows = 3, dim = 8;
  const float eps = 1e-5f;
  std::vector<float> x = RandomVector(rows * dim, 3);
  std::vector<float> w = RandomVector(dim, 4, 0.3);
  for (float& v : w) v += 1.f;
  const std::vector<float> r = RandomVector(rows * dim, 5);
  std::vector<float> y(rows * dim), rstd(rows);
  auto objective = [&] {
    ref::RmsNormForward(x.data(), w.data(), y.data(), rstd.data(), rows, dim, eps);
    return Dot(y, r);
  };
  objective();
  // Each normalized row has mean square 1 before the gain.
  double ms = 0.0;
  for (int j = 0; j < dim; ++j) ms += std::pow(x[j] * rstd[0], 2);
  EXPECT_NEAR(ms / dim, 1.0, 1e-4);
  std::vector<float> dx(rows * dim), dw(dim, 0.f);
  ref::RmsNormBackward(r.data(), x.data(), w.data(), rstd.data(), dx.data(), dw.data(), rows, dim);
  ExpectGradient("dx", &x, dx, objective);
  ExpectGradient("dw", &w, dw, objective);
}

TEST(RefLinear, BackwardMatchesFiniteDifferenceAndWeightGradAccumulates) {
  const int m = 4, k = 6, n = 5;
  std::vector<float> x = RandomVector(m * k, 6);
  std::vector<float> w = RandomVector(n * k, 7);
  const std::vector<float> r = RandomVector(m * n, 8);
  std::vector<float> y(m * n);
  auto objective = [&] {
    ref::LinearForward(x.data(), w.data(), y.data(), m, k, n);
    return Dot(y, r);
  };
  objective();
  // y = x W^T with W stored [out, in].
  double y12 = 0.0;
  for (int j = 0; j < k; ++j) y12 += static_cast<double>(x[1 * k + j]) * w[2 * k + j];
  EXPECT_NEAR(y[1 * n + 2], y12, 1e-5);
  std::vector<float> dx(m * k), dw(n * k, 0.f);
  ref::LinearBackwardInput(r.data(), w.data(), dx.data(), m, k, n);
  ref::LinearBackwardWeight(r.data(), x.data(), dw.data(), m, k, n);
  ExpectGradient("dx", &x, dx, objective);
  ExpectGradient("dw", &w, dw, objective);
  std::vector<float> dw_twice = dw;
  ref::LinearBackwardWeight(r.data(), x.data(), dw_twice.data(), m, k, n);
  for (size_t i = 0; i < dw.size(); ++i) EXPECT_FLOAT_EQ(dw_twice[i], 2 * dw[i]);
}

TEST(RefRope, RotatesInterleavedPairsByPositionTimesFrequency) {
  // One head of dim 4, positions 0 and 1: pair i rotates by t * theta^(-2i/4).
  const float theta = 10000.f;
  std::vector<float> x = {1, 0, 1, 0, /*t=1*/ 1, 0, 1, 0};
  ref::RopeForward(x.data(), 1, 2, 1, 4, 4, theta);
  EXPECT_FLOAT_EQ(x[0], 1.f);
  EXPECT_FLOAT_EQ(x[1], 0.f);
  EXPECT_NEAR(x[4], std::cos(1.0), 1e-6);
  EXPECT_NEAR(x[5], std::sin(1.0), 1e-6);
  EXPECT_NEAR(x[6], std::cos(0.01), 1e-6);  // 10000^(-1/2) = 0.01
  EXPECT_NEAR(x[7], std::sin(0.01), 1e-6);
}

TEST(RefRope, BackwardMatchesFiniteDifferenceAndLeavesOtherColumnsAlone) {
  const int batch = 2, seq = 5, heads = 2, hd = 4, stride = heads * hd + 3;
  std::vector<float> x = RandomVector(batch * seq * stride, 9);
  const std::vector<float> r = RandomVector(x.size(), 10);
  std::vector<float> y;
  auto objective = [&] {
    y = x;
    ref::RopeForward(y.data(), batch, seq, heads, hd, stride, 10000.f);
    return Dot(y, r);
  };
  objective();
  for (int row = 0; row < batch * seq; ++row)
    for (int c = heads * hd; c < stride; ++c) EXPECT_EQ(y[row * stride + c], x[row * stride + c]);
  std::vector<float> dx = r;
  ref::RopeBackward(dx.data(), batch, seq, heads, hd, stride, 10000.f);
  ExpectGradient("dx", &x, dx, objective);
}

struct AttentionCase {
  int batch, seq, n_head, n_kv_head, head_dim;
};

class RefAttention : public ::testing::TestWithParam<AttentionCase> {};

TEST_P(RefAttention, BackwardMatchesFiniteDifference) {
  const AttentionCase c = GetParam();
  const int kv = c.n_kv_head * c.head_dim, qd = c.n_head * c.head_dim;
  const int stride = qd + 2 * kv;
  const ref::AttentionShape s{c.batch, c.seq, c.n_head, c.n_kv_head, c.head_dim, stride};
  const int rows = c.batch * c.seq;
  std::vector<float> qkv = RandomVector(rows * stride, 11);
  const std::vector<float> r = RandomVector(rows * qd, 12);
  std::vector<float> out(rows * qd), lse(c.batch * c.n_head * c.seq);
  auto objective = [&] {
    ref::AttentionForward(qkv.data(), qkv.data() + qd, qkv.data() + qd + kv, out.data(), lse.data(),
                          s);
    return Dot(out, r);
  };
  objective();
  std::vector<float> dqkv(qkv.size(), 0.f);
  ref::AttentionBackward(r.data(), qkv.data(), qkv.data() + qd, qkv.data() + qd + kv, out.data(),
                         lse.data(), dqkv.data(), dqkv.data() + qd, dqkv.data() + qd + kv, s);
  ExpectGradient("dqkv", &qkv, dqkv, objective);
}

INSTANTIATE_TEST_SUITE_P(RefAttentionShapes, RefAttention,
                         ::testing::Values(AttentionCase{2, 5, 2, 2, 4},    // multi-head
                                           AttentionCase{1, 6, 4, 2, 4},    // GQA, 2 per group
                                           AttentionCase{2, 4, 4, 1, 2}));  // multi-query

TEST(RefAttentionCausality, FutureKeysAndValuesDoNotChangeEarlierOutputs) {
  const int seq = 6, n_head = 4, n_kv = 2, hd = 4, qd = n_head * hd, kv = n_kv * hd;
  const int stride = qd + 2 * kv;
  const ref::AttentionShape s{1, seq, n_head, n_kv, hd, stride};
  std::vector<float> qkv = RandomVector(seq * stride, 13);
  std::vector<float> out(seq * qd), out2(seq * qd), lse(n_head * seq);
  ref::AttentionForward(qkv.data(), qkv.data() + qd, qkv.data() + qd + kv, out.data(), lse.data(),
                        s);
  // Position 0 sees only itself: its output is its own value vector, per kv group.
  for (int h = 0; h < n_head; ++h)
    for (int d = 0; d < hd; ++d)
      EXPECT_NEAR(out[h * hd + d], qkv[qd + kv + (h / (n_head / n_kv)) * hd + d], 1e-6);
  const int t = 3;
  for (int c = qd; c < stride; ++c) qkv[t * stride + c] += 1.f;  // k and v of token 3
  ref::AttentionForward(qkv.data(), qkv.data() + qd, qkv.data() + qd + kv, out2.data(), lse.data(),
                        s);
  for (int row = 0; row < seq; ++row) {
    double diff = 0.0;
    for (int c = 0; c < qd; ++c) diff += std::fabs(out2[row * qd + c] - out[row * qd + c]);
    if (row < t) {
      EXPECT_EQ(diff, 0.0) << "row " << row << " saw a later token";
    } else {
      EXPECT_GT(diff, 1e-3) << "row " << row << " ignored an earlier token";
    }
  }
}

TEST(RefSwiGlu, BackwardMatchesFiniteDifference) {
  const int rows = 3, dim = 5;
  std::vector<float> gu = RandomVector(rows * 2 * dim, 14, 2.0);
  const std::vector<float> r = RandomVector(rows * dim, 15);
  std::vector<float> h(rows * dim);
  auto objective = [&] {
    ref::SwiGluForward(gu.data(), h.data(), rows, dim);
    return Dot(h, r);
  };
  objective();
  const float g = gu[0], u = gu[dim];
  EXPECT_NEAR(h[0], g / (1 + std::exp(-g)) * u, 1e-6);
  std::vector<float> dgu(gu.size());
  ref::SwiGluBackward(r.data(), gu.data(), dgu.data(), rows, dim);
  ExpectGradient("dgate_up", &gu, dgu, objective);
}

TEST(RefCrossEntropy, BackwardMatchesFiniteDifferenceAndMayRunInPlace) {
  const int rows = 3, vocab = 7;
  const float dloss = 0.7f;
  const std::vector<int32_t> targets = {2, 6, 0};
  std::vector<float> logits = RandomVector(rows * vocab, 16, 2.0);
  auto objective = [&] {
    return dloss * static_cast<double>(ref::CrossEntropyForwardBackward(
                       logits.data(), targets.data(), nullptr, rows, vocab, dloss));
  };
  std::vector<float> dlogits(logits.size());
  const float loss = ref::CrossEntropyForwardBackward(logits.data(), targets.data(), dlogits.data(),
                                                      rows, vocab, dloss);
  ExpectGradient("dlogits", &logits, dlogits, objective);
  std::vector<float> in_place = logits;
  EXPECT_EQ(ref::CrossEntropyForwardBackward(in_place.data(), targets.data(), in_place.data(), rows,
                                             vocab, dloss),
            loss);
  EXPECT_EQ(in_place, dlogits);
}

TEST(RefCrossEntropy, UniformLogitsGiveLogVocab) {
  const int vocab = 256;
  std::vector<float> logits(2 * vocab, 0.5f);
  const std::vector<int32_t> targets = {3, 200};
  EXPECT_NEAR(
      ref::CrossEntropyForwardBackward(logits.data(), targets.data(), nullptr, 2, vocab, 1.f),
      std::log(256.0), 1e-5);
}

TEST(RefAdamW, FirstStepMovesEachParameterByLrTimesSignPlusDecay) {
  // At step 1 the bias-corrected m / sqrt(v) is g / |g|.
  std::vector<float> p = {1.f, -2.f, 0.5f}, g = {0.3f, -4.f, 0.f}, m(3, 0.f), v(3, 0.f);
  ref::AdamWArgs args;
  args.lr = 0.1f;
  args.weight_decay = 0.5f;
  args.eps = 1e-8f;
  args.step = 1;
  ref::AdamWUpdate(p.data(), g.data(), m.data(), v.data(), 3, args, /*grad_scale=*/1.f);
  EXPECT_NEAR(p[0], 1.f - 0.1f * (1.f + 0.5f * 1.f), 1e-5);
  EXPECT_NEAR(p[1], -2.f - 0.1f * (-1.f + 0.5f * -2.f), 1e-5);
  EXPECT_NEAR(p[2], 0.5f - 0.1f * 0.5f * 0.5f, 1e-6);  // no gradient: decay only
  EXPECT_NEAR(m[1], (1 - 0.9f) * -4.f, 1e-6);
  EXPECT_NEAR(v[1], (1 - 0.95f) * 16.f, 1e-5);
}

TEST(RefAdamW, GradScaleScalesTheMoments) {
  std::vector<float> p = {1.f}, g = {2.f}, m = {0.f}, v = {0.f};
  ref::AdamWArgs args;
  args.lr = 0.f;
  ref::AdamWUpdate(p.data(), g.data(), m.data(), v.data(), 1, args, 0.25f);
  EXPECT_FLOAT_EQ(m[0], 0.1f * 0.5f);
  EXPECT_FLOAT_EQ(p[0], 1.f);
}

TEST(RefGradNorm, GlobalNormOverTensorsAndClipFactor) {
  const std::vector<float> a = {3.f}, b = {0.f, 4.f};
  const float norm = ref::GlobalGradNorm({{a.data(), 1}, {b.data(), 2}});
  EXPECT_FLOAT_EQ(norm, 5.f);
  EXPECT_FLOAT_EQ(ref::ClipFactor(norm, 1.f), 0.2f);
  EXPECT_FLOAT_EQ(ref::ClipFactor(norm, 10.f), 1.f);
  EXPECT_FLOAT_EQ(ref::ClipFactor(norm, 0.f), 1.f);
  const std::vector<float> bad = {NAN};
  EXPECT_TRUE(std::isnan(ref::GlobalGradNorm({{a.data(), 1}, {bad.data(), 1}})));
}

// FP8 Linear: the quantization layout of each GEMM, compared with hand-quantized operands.
TEST(RefFp8Linear, PerTensorForwardIsTheGemmOfQuantizedOperands) {
  const int m = 4, k = 8, n = 3;
  const std::vector<float> x = RandomVector(m * k, 17), w = RandomVector(n * k, 18);
  ref::Fp8LinearQuant q;
  q.input = {ref::Fp8Scaling::kTensor, Fp8Format::kE4M3, 16.f};
  q.weight = {ref::Fp8Scaling::kTensor, Fp8Format::kE4M3, 64.f};
  std::vector<float> xq(x.size()), wq(w.size()), want(m * n), got(m * n);
  QuantizeDequantize(x, absl::MakeSpan(xq), Fp8Format::kE4M3, 16.f);
  QuantizeDequantize(w, absl::MakeSpan(wq), Fp8Format::kE4M3, 64.f);
  ref::LinearForward(xq.data(), wq.data(), want.data(), m, k, n);
  ref::Fp8LinearStats stats;
  ref::Fp8LinearForward(x.data(), w.data(), got.data(), m, k, n, q, &stats);
  EXPECT_EQ(got, want);
  EXPECT_EQ(stats.input.count, m * k);
  EXPECT_EQ(stats.weight.count, n * k);
  EXPECT_NE(xq, x);  // the quantization did something
}

TEST(RefFp8Linear, RowwiseBackwardQuantizesAlongEachGemmsContraction) {
  // Each operand below has a tiny and a huge column. Scaled along the wrong dimension (one
  // scale shared by a tiny and a huge value) the tiny values would flush to zero; scaled along
  // the contraction dimension they keep E4M3's ~6% relative precision.
  const int m = 2, k = 2, n = 2;
  ref::Fp8LinearQuant q;
  q.input = q.weight = q.grad_output = {ref::Fp8Scaling::kBlocks, Fp8Format::kE4M3, 1.f, 0, 1, 0};
  constexpr float kE4M3RelErr = 0.07f;
  {
    // dX = dY W contracts over n: W [n, k] is scaled per column.
    const std::vector<float> w = {1e-6f, 1000.f, 2e-6f, 3000.f};
    const std::vector<float> x(m * k, 1.f), dy(m * n, 1.f);
    std::vector<float> dx(m * k), dw(n * k, 0.f);
    ref::Fp8LinearBackward(dy.data(), x.data(), w.data(), dx.data(), dw.data(), m, k, n, q,
                           nullptr);
    EXPECT_NEAR(dx[0], 3e-6f, 3e-6f * kE4M3RelErr);
    EXPECT_NEAR(dx[1], 4000.f, 4000.f * kE4M3RelErr);
  }
  {
    // dW = dY^T X contracts over m: X [m, k] is scaled per column.
    const std::vector<float> x = {1e-6f, 1000.f, 2e-6f, 3000.f};
    const std::vector<float> w(n * k, 1.f), dy(m * n, 1.f);
    std::vector<float> dx(m * k), dw(n * k, 0.f);
    ref::Fp8LinearBackward(dy.data(), x.data(), w.data(), dx.data(), dw.data(), m, k, n, q,
                           nullptr);
    for (int o = 0; o < n; ++o) {
      EXPECT_NEAR(dw[o * k + 0], 3e-6f, 3e-6f * kE4M3RelErr);
      EXPECT_NEAR(dw[o * k + 1], 4000.f, 4000.f * kE4M3RelErr);
    }
  }
  {
    // Y = X W^T contracts over k: X and W are scaled per row, so a row mixing tiny and huge
    // values loses the tiny one, as the forward GEMM's layout dictates.
    const std::vector<float> x = {1e-6f, 1000.f, 1.f, 1.f};
    const std::vector<float> w = {1.f, 0.f, 1.f, 0.f};  // picks column 0 of x
    std::vector<float> y(m * n);
    ref::Fp8LinearForward(x.data(), w.data(), y.data(), m, k, n, q, nullptr);
    EXPECT_EQ(y[0], 0.f);
    EXPECT_EQ(y[2], 1.f);
  }
}

TEST(RefFp8Linear, Fp32OutputRowsBypassQuantization) {
  const int m = 3, k = 8, n = 5, fp32_rows = 3;
  const std::vector<float> x = RandomVector(m * k, 19), w = RandomVector(n * k, 20);
  const std::vector<float> dy = RandomVector(m * n, 21);
  ref::Fp8LinearQuant q;
  q.input = q.weight = {ref::Fp8Scaling::kCurrentTensor, Fp8Format::kE4M3};
  q.grad_output = {ref::Fp8Scaling::kCurrentTensor, Fp8Format::kE5M2};
  q.fp32_out_rows = fp32_rows;
  std::vector<float> y(m * n), y32(m * n);
  ref::Fp8LinearForward(x.data(), w.data(), y.data(), m, k, n, q, nullptr);
  ref::LinearForward(x.data(), w.data(), y32.data(), m, k, n);
  int fp8_differs = 0;
  for (int i = 0; i < m; ++i) {
    for (int o = 0; o < n; ++o) {
      if (o < fp32_rows) {
        EXPECT_EQ(y[i * n + o], y32[i * n + o]);
      } else {
        EXPECT_NEAR(y[i * n + o], y32[i * n + o], 0.5f);
        fp8_differs += y[i * n + o] != y32[i * n + o];
      }
    }
  }
  EXPECT_GT(fp8_differs, 0);
  std::vector<float> dx(m * k), dw(n * k, 0.f), dw32(n * k, 0.f);
  ref::Fp8LinearBackward(dy.data(), x.data(), w.data(), dx.data(), dw.data(), m, k, n, q, nullptr);
  ref::LinearBackwardWeight(dy.data(), x.data(), dw32.data(), m, k, n);
  for (int j = 0; j < fp32_rows * k; ++j) EXPECT_EQ(dw[j], dw32[j]);
}

// Whole model: d loss / d parameter against central differences, at the entries of each tensor
// with the largest analytic gradient (where a wrong backward shows) plus one random entry.
TEST(RefModel, LossGradientMatchesFiniteDifferenceForSampledParameters) {
  for (bool tied : {true, false}) {
    ModelConfig c;
    c.n_layer = 2;
    c.d_model = 16;
    c.n_head = 4;
    c.n_kv_head = 2;
    c.d_ff = 24;
    c.vocab_size = 32;
    c.max_seq_len = 16;
    c.tie_embeddings = tied;
    c.init_std = 0.3f;  // large enough that every tensor's gradient rises above FD noise
    TensorMap weights = InitWeights(c, 7);
    TensorMap grads;
    for (const auto& [name, t] : weights) grads[name] = {t.shape, std::vector<float>(t.numel())};
    TokenBatch batch{2, 6, {}, {}};
    Rng rng(99);
    for (int i = 0; i < 12; ++i) {
      batch.inputs.push_back(rng.NextBelow(c.vocab_size));
      batch.targets.push_back(rng.NextBelow(c.vocab_size));
    }
    CpuModel model(c);
    model.ForwardBackward(weights, batch, {}, 1.f, &grads);
    for (const ParamSpec& spec : ParamSpecs(c)) {
      std::vector<float>& w = weights.at(spec.name).data;
      const std::vector<float>& g = grads.at(spec.name).data;
      std::vector<size_t> order(w.size());
      std::iota(order.begin(), order.end(), 0);
      std::partial_sort(order.begin(), order.begin() + 3, order.end(),
                        [&](size_t a, size_t b) { return std::fabs(g[a]) > std::fabs(g[b]); });
      order.resize(3);
      order.push_back(rng.NextBelow(w.size()));
      for (size_t i : order) {
        const float saved = w[i];
        const float h = 1e-2f;
        w[i] = saved + h;
        const double plus = model.ForwardBackward(weights, batch, {}, 1.f, nullptr);
        w[i] = saved - h;
        const double minus = model.ForwardBackward(weights, batch, {}, 1.f, nullptr);
        w[i] = saved;
        const double numeric = (plus - minus) / (static_cast<double>(saved + h) - (saved - h));
        EXPECT_NEAR(g[i], numeric, 2e-4 + 3e-2 * std::fabs(numeric))
            << spec.name << "[" << i << "] tied=" << tied;
      }
      EXPECT_GT(std::fabs(g[order[0]]), 1e-3) << spec.name << " has no gradient";
    }
  }
}

}  // namespace
}  // namespace fp8d
