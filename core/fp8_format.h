// FP8 E4M3 and E5M2 conversions, bit-exact with CUDA's __nv_cvt_float_to_fp8 under
// __NV_SATFINITE (round to nearest even, finite overflow saturates to +-max, NaN stays NaN).
#pragma once

#include <cstdint>

#include "core/recipe_config.h"

namespace fp8d {

inline constexpr float kE4M3Max = 448.f;
inline constexpr float kE5M2Max = 57344.f;

uint8_t FloatToE4M3(float x);
uint8_t FloatToE5M2(float x);
float E4M3ToFloat(uint8_t bits);
float E5M2ToFloat(uint8_t bits);

uint8_t FloatToFp8(float x, Fp8Format format);
float Fp8ToFloat(uint8_t bits, Fp8Format format);
float Fp8Max(Fp8Format format);

}  // namespace fp8d
