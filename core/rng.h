// A small deterministic generator (SplitMix64) with a portable normal sampler. The standard
// library's distributions are implementation-defined, which would make initial weights and data
// order depend on the standard library; these do not.
#pragma once

#include <cmath>
#include <cstdint>

namespace fp8d {

class Rng {
 public:
  explicit Rng(uint64_t seed) : state_(seed) {}

  uint64_t NextU64() {
    uint64_t z = (state_ += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
  }
  // Uniform in [0, 1) with 53 random bits.
  double NextDouble() { return static_cast<double>(NextU64() >> 11) * 0x1.0p-53; }
  // Uniform integer in [0, n), n > 0 (modulo bias is below 2^-40 for n < 2^24).
  uint64_t NextBelow(uint64_t n) { return NextU64() % n; }
  // Standard normal by Box-Muller, one value per call (the partner is discarded for simplicity).
  double NextNormal() {
    double u1 = NextDouble();
    while (u1 <= 0.0) u1 = NextDouble();
    const double u2 = NextDouble();
    return std::sqrt(-2.0 * std::log(u1)) * std::cos(6.283185307179586 * u2);
  }

  uint64_t state() const { return state_; }
  void set_state(uint64_t s) { state_ = s; }

 private:
  uint64_t state_;
};

}  // namespace fp8d
