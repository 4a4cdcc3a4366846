// Learning-rate schedule: linear warm-up to the peak rate, then cosine decay to the floor, which
// is reached exactly at the last step.
#pragma once

#include <cstdint>

namespace fp8d {

class LrSchedule {
 public:
  // `total_steps` >= 1, 0 <= `warmup_steps` <= `total_steps`, 0 <= `min_lr` <= `lr`.
  LrSchedule(float lr, float min_lr, int64_t warmup_steps, int64_t total_steps);

  // Rate for the step with 0-based index `step` (the step about to run). During warm-up, step i
  // uses lr * (i + 1) / warmup_steps, so the first step already moves and step warmup_steps - 1
  // runs at the peak; from there a half cosine falls to min_lr at step total_steps - 1.
  float At(int64_t step) const;

 private:
  double lr_;
  double min_lr_;
  int64_t warmup_steps_;
  int64_t total_steps_;
};

}  // namespace fp8d
