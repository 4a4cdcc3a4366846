#include "core/fp8_scaling.h"

#include <algorithm>
#include <cmath>
#include <utility>

#include "absl/base/internal/raw_logging.h"

namespace fp8d {

float ComputeScale(float amax, float fp8_max, int margin, float previous_scale) {
  // An amax of 0 means the tensor carried no signal this window and inf/NaN mean it blew up:
  // neither says anything about the right scale, so the last good one stays.
  if (!std::isfinite(amax) || !(amax > 0.f)) return previous_scale;
  // Two FP32 divisions in this order, as the GPU kernel computes it; 2^margin is exact.
  const float scale = (fp8_max / amax) / std::ldexp(1.f, margin);
  // A subnormal amax can push fp8_max / amax to inf.
  if (!std::isfinite(scale)) return previous_scale;
  return scale;
}

AmaxHistory::AmaxHistory(int len, AmaxAlgo algo) : window_(len, 0.f), algo_(algo) {
  ABSL_RAW_CHECK(len >= 0, "amax history length must be >= 0");
}

void AmaxHistory::Push(float amax) {
  if (window_.empty()) return;
  std::rotate(window_.rbegin(), window_.rbegin() + 1, window_.rend());
  window_[0] = amax;
}

float AmaxHistory::Reduced() const {
  if (window_.empty()) return 0.f;
  if (algo_ == AmaxAlgo::kMostRecent) return window_[0];
  // fmax skips NaN like the GPU's fmaxf reduction: one NaN step does not poison the whole
  // window, while an inf does dominate it (and ComputeScale then keeps the previous scale).
  float m = 0.f;
  for (float a : window_) m = std::fmax(m, a);
  return m;
}

void AmaxHistory::Reset() { std::fill(window_.begin(), window_.end(), 0.f); }

void AmaxHistory::set_window(std::vector<float> w) {
  const size_t len = window_.size();
  window_ = std::move(w);
  window_.resize(len, 0.f);
}

}  // namespace fp8d
