#include "core/fp8_format.h"

#include <array>
#include <bit>
#include <cmath>
#include <limits>

namespace fp8d {
namespace {

// An FP8 layout: sign, exponent with `bias`, `man_bits` mantissa bits.
struct Fp8Layout {
  int bias;
  int man_bits;
  uint32_t max_code;       // largest finite magnitude code: 0x7E (E4M3), 0x7B (E5M2)
  uint32_t saturate_from;  // float bits of the smallest |x| that rounds past max_code
  uint32_t min_normal;     // float bits of 2^(1 - bias)
};

// E4M3 has no infinities and 0x7F/0xFF are NaN, so 448 (0x7E) is the largest finite value.
// Everything above 448 becomes 448: up to 464 by rounding (448's mantissa 110 is even), beyond
// that by saturation.
constexpr Fp8Layout kE4M3 = {7, 3, 0x7E, std::bit_cast<uint32_t>(448.f) + 1,
                             std::bit_cast<uint32_t>(0x1p-6f)};
// E5M2 keeps IEEE infinities (0x7C). 57344 = 1.75 * 2^15 has an odd mantissa, so the halfway
// point 61440 rounds to even, i.e. up to 2^16, which overflows: saturate from 61440 on.
constexpr Fp8Layout kE5M2 = {15, 2, 0x7B, std::bit_cast<uint32_t>(61440.f),
                             std::bit_cast<uint32_t>(0x1p-14f)};

// The code CUDA's conversion returns for any NaN input: the sign is dropped (the host path
// canonicalises the NaN to 0x7FFFFFFF first) and the result is 0x7F in both formats.
constexpr uint8_t kNanCode = 0x7F;

// Shifts `value` right by `shift` bits, rounding the dropped bits to nearest, ties to even.
inline uint32_t ShiftRoundNearestEven(uint32_t value, int shift) {
  if (shift <= 0) return value;
  if (shift >= 32) return 0;  // value < 2^24 < 2^31: below one half, rounds to 0
  const uint32_t kept = value >> shift;
  const uint32_t dropped = value & ((1u << shift) - 1u);
  const uint32_t half = 1u << (shift - 1);
  return kept + ((dropped > half || (dropped == half && (kept & 1u))) ? 1u : 0u);
}

inline uint8_t FloatToFp8Impl(float x, const Fp8Layout& f) {
  const uint32_t bits = std::bit_cast<uint32_t>(x);
  const uint32_t sign = (bits >> 24) & 0x80u;
  const uint32_t abs = bits & 0x7FFFFFFFu;
  if (abs > 0x7F800000u) return kNanCode;
  // SATFINITE: finite overflow and +-inf both become +-max.
  if (abs >= f.saturate_from) return static_cast<uint8_t>(sign | f.max_code);
  if (abs >= f.min_normal) {
    // Re-bias the exponent and keep the top man_bits of the mantissa; a rounding carry out of
    // the mantissa correctly bumps the exponent. The result stays <= max_code because
    // saturate_from already caught everything that would round past it.
    const uint32_t rebased = abs - (static_cast<uint32_t>(127 - f.bias) << 23);
    return static_cast<uint8_t>(sign | ShiftRoundNearestEven(rebased, 23 - f.man_bits));
  }
  // Subnormal FP8 (or zero): count units of 2^(1 - bias - man_bits). |x| = significand *
  // 2^(exponent - 150) with the implicit bit included for normal floats.
  const uint32_t exponent = abs >> 23;
  const uint32_t significand = exponent == 0 ? (abs & 0x7FFFFFu) : ((abs & 0x7FFFFFu) | 0x800000u);
  const int biased = exponent == 0 ? 1 : static_cast<int>(exponent);
  const int shift = 151 - f.bias - f.man_bits - biased;
  // A carry up to 2^man_bits is the smallest normal code, which is the right answer.
  return static_cast<uint8_t>(sign | ShiftRoundNearestEven(significand, shift));
}

float DecodeE4M3(uint8_t bits) {
  const bool negative = bits & 0x80u;
  const int exponent = (bits >> 3) & 0xF;
  const int mantissa = bits & 0x7;
  if (exponent == 0xF && mantissa == 0x7) return std::numeric_limits<float>::quiet_NaN();
  const float magnitude = exponent == 0
                              ? std::ldexp(static_cast<float>(mantissa), -9)
                              : std::ldexp(static_cast<float>(8 + mantissa), exponent - 10);
  return negative ? -magnitude : magnitude;
}

float DecodeE5M2(uint8_t bits) {
  const bool negative = bits & 0x80u;
  const int exponent = (bits >> 2) & 0x1F;
  const int mantissa = bits & 0x3;
  float magnitude;
  if (exponent == 0x1F) {
    if (mantissa != 0) return std::numeric_limits<float>::quiet_NaN();
    magnitude = std::numeric_limits<float>::infinity();
  } else if (exponent == 0) {
    magnitude = std::ldexp(static_cast<float>(mantissa), -16);
  } else {
    magnitude = std::ldexp(static_cast<float>(4 + mantissa), exponent - 17);
  }
  return negative ? -magnitude : magnitude;
}

}  // namespace

uint8_t FloatToE4M3(float x) { return FloatToFp8Impl(x, kE4M3); }
uint8_t FloatToE5M2(float x) { return FloatToFp8Impl(x, kE5M2); }

float E4M3ToFloat(uint8_t bits) {
  // Decoding sits in the quantize-dequantize inner loop: look it up.
  static const std::array<float, 256> kTable = [] {
    std::array<float, 256> t;
    for (int i = 0; i < 256; ++i) t[i] = DecodeE4M3(static_cast<uint8_t>(i));
    return t;
  }();
  return kTable[bits];
}

float E5M2ToFloat(uint8_t bits) {
  static const std::array<float, 256> kTable = [] {
    std::array<float, 256> t;
    for (int i = 0; i < 256; ++i) t[i] = DecodeE5M2(static_cast<uint8_t>(i));
    return t;
  }();
  return kTable[bits];
}

uint8_t FloatToFp8(float x, Fp8Format format) {
  return format == Fp8Format::kE4M3 ? FloatToE4M3(x) : FloatToE5M2(x);
}

float Fp8ToFloat(uint8_t bits, Fp8Format format) {
  return format == Fp8Format::kE4M3 ? E4M3ToFloat(bits) : E5M2ToFloat(bits);
}

float Fp8Max(Fp8Format format) { return format == Fp8Format::kE4M3 ? kE4M3Max : kE5M2Max; }

}  // namespace fp8d
