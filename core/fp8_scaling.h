// Scale math and amax histories with Transformer Engine's DelayedScaling semantics.
#pragma once

#include <vector>

#include "core/recipe_config.h"

namespace fp8d {

// scale = (fp8_max / amax) / 2^margin, computed in FP32 exactly as the GPU kernel does.
// Returns `previous_scale` when amax is 0, NaN or inf, or when the result is not finite.
float ComputeScale(float amax, float fp8_max, int margin, float previous_scale);

// Window of the last `len` amaxes, newest first. Push records a new step's amax; the reduced
// value (max over the window, or the most recent) feeds ComputeScale for the next step.
class AmaxHistory {
 public:
  AmaxHistory(int len, AmaxAlgo algo);
  void Push(float amax);           // shifts the window, drops the oldest
  float Reduced() const;           // max of window, or window[0] for most_recent; 0 when empty
  void Reset();                    // all zeros
  const std::vector<float>& window() const { return window_; }  // size len, newest first
  void set_window(std::vector<float> w);  // restore from checkpoint (resized to len)
  int len() const { return static_cast<int>(window_.size()); }
  AmaxAlgo algo() const { return algo_; }

 private:
  std::vector<float> window_;
  AmaxAlgo algo_;
};

}  // namespace fp8d
