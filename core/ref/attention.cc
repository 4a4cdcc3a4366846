#include "core/ref/attention.h"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <vector>

namespace fp8d::ref {
namespace {

float Dot(const float* a, const float* b, int n) {
  float acc = 0.f;
  for (int i = 0; i < n; ++i) acc += a[i] * b[i];
  return acc;
}

}  // namespace

void AttentionForward(const float* q, const float* k, const float* v, float* out, float* lse,
                      const AttentionShape& s) {
  const int T = s.seq_len, hd = s.head_dim, group = s.n_head / s.n_kv_head;
  const int64_t out_stride = static_cast<int64_t>(s.n_head) * hd;
  const float scale = 1.f / std::sqrt(static_cast<float>(hd));
  std::vector<float> scores(T);
  for (int b = 0; b < s.batch; ++b) {
    for (int h = 0; h < s.n_head; ++h) {
      const int kvh = h / group;
      for (int t = 0; t < T; ++t) {
        const float* qt = q + (static_cast<int64_t>(b) * T + t) * s.qkv_stride + h * hd;
        float mx = -INFINITY;
        for (int j = 0; j <= t; ++j) {
          const float* kj = k + (static_cast<int64_t>(b) * T + j) * s.qkv_stride + kvh * hd;
          scores[j] = Dot(qt, kj, hd) * scale;
          mx = std::fmax(mx, scores[j]);
        }
        float sum = 0.f;
        for (int j = 0; j <= t; ++j) sum += std::exp(scores[j] - mx);
        const float l = mx + std::log(sum);
        lse[(static_cast<int64_t>(b) * s.n_head + h) * T + t] = l;
        float* ot = out + (static_cast<int64_t>(b) * T + t) * out_stride + h * hd;
        std::fill(ot, ot + hd, 0.f);
        for (int j = 0; j <= t; ++j) {
          const float p = std::exp(scores[j] - l);
          const float* vj = v + (static_cast<int64_t>(b) * T + j) * s.qkv_stride + kvh * hd;
          for (int d = 0; d < hd; ++d) ot[d] += p * vj[d];
        }
      }
    }
  }
}

void AttentionBackward(const float* dout, const float* q, const float* k, const float* v,
                       const float* out, const float* lse, float* dq, float* dk, float* dv,
                       const AttentionShape& s) {
  const int T = s.seq_len, hd = s.head_dim, group = s.n_head / s.n_kv_head;
  const int64_t out_stride = static_cast<int64_t>(s.n_head) * hd;
  const float scale = 1.f / std::sqrt(static_cast<float>(hd));
  auto row = [&](int b, int t) { return (static_cast<int64_t>(b) * T + t) * s.qkv_stride; };
  for (int b = 0; b < s.batch; ++b) {
    for (int t = 0; t < T; ++t) {
      std::fill(dq + row(b, t), dq + row(b, t) + s.n_head * hd, 0.f);
      std::fill(dk + row(b, t), dk + row(b, t) + s.n_kv_head * hd, 0.f);
      std::fill(dv + row(b, t), dv + row(b, t) + s.n_kv_head * hd, 0.f);
    }
  }
  for (int b = 0; b < s.batch; ++b) {
    for (int h = 0; h < s.n_head; ++h) {
      const int kvh = h / group;
      for (int t = 0; t < T; ++t) {
        const int64_t o = (static_cast<int64_t>(b) * T + t) * out_stride + h * hd;
        const float* dot = dout + o;
        // D = sum_j p_j (dout . v_j) = dout . out: the softmax Jacobian's rank-one term.
        const float D = Dot(dot, out + o, hd);
        const float l = lse[(static_cast<int64_t>(b) * s.n_head + h) * T + t];
        const float* qt = q + row(b, t) + h * hd;
        float* dqt = dq + row(b, t) + h * hd;
        for (int j = 0; j <= t; ++j) {
          const float* kj = k + row(b, j) + kvh * hd;
          const float* vj = v + row(b, j) + kvh * hd;
          const float p = std::exp(Dot(qt, kj, hd) * scale - l);
          const float ds = p * (Dot(dot, vj, hd) - D) * scale;
          float* dkj = dk + row(b, j) + kvh * hd;
          float* dvj = dv + row(b, j) + kvh * hd;
          for (int d = 0; d < hd; ++d) {
            dqt[d] += ds * kj[d];
            dkj[d] += ds * qt[d];
            dvj[d] += p * dot[d];
          }
        }
      }
    }
  }
}

}  // namespace fp8d::ref
