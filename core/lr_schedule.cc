#include "core/lr_schedule.h"

#include <algorithm>
#include <cmath>

#include "absl/base/internal/raw_logging.h"

namespace fp8d {

LrSchedule::LrSchedule(float lr, float min_lr, int64_t warmup_steps, int64_t total_steps)
    : lr_(lr), min_lr_(min_lr), warmup_steps_(warmup_steps), total_steps_(total_steps) {
  ABSL_RAW_CHECK(total_steps >= 1, "total_steps >= 1");
  ABSL_RAW_CHECK(warmup_steps >= 0 && warmup_steps <= total_steps, "warmup in 0..total");
  ABSL_RAW_CHECK(min_lr >= 0.f && min_lr <= lr, "min_lr in 0..lr");
}

float LrSchedule::At(int64_t step) const {
  step = std::clamp<int64_t>(step, 0, total_steps_ - 1);
  if (step < warmup_steps_) {
    return static_cast<float>(lr_ * static_cast<double>(step + 1) /
                              static_cast<double>(warmup_steps_));
  }
  // The decay spans from the first post-warm-up step (at lr) to the last step (at min_lr).
  const int64_t decay_steps = total_steps_ - 1 - warmup_steps_;
  if (decay_steps <= 0) return static_cast<float>(lr_);
  const double progress =
      static_cast<double>(step - warmup_steps_) / static_cast<double>(decay_steps);
  const double cosine = 0.5 * (1.0 + std::cos(M_PI * progress));
  return static_cast<float>(min_lr_ + (lr_ - min_lr_) * cosine);
}

}  // namespace fp8d
