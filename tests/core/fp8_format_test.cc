// FP8 conversions: hand-checked values that always run, and an exhaustive comparison of every
// float bit pattern against CUDA's own host conversion when the CUDA headers are available.
#include "core/fp8_format.h"

#include <atomic>
#include <bit>
#include <cmath>
#include <cstdint>
#include <limits>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_format.h"
#include "gtest/gtest.h"

#if FP8D_HAVE_CUDA_HEADERS
#include <cuda_fp8.h>
#endif

namespace fp8d {
namespace {

constexpr float kInf = std::numeric_limits<float>::infinity();
constexpr float kNaN = std::numeric_limits<float>::quiet_NaN();

TEST(Fp8FormatTest, MaxValuesEncodeToLargestFiniteCode) {
  EXPECT_EQ(FloatToE4M3(448.f), 0x7E);
  EXPECT_EQ(FloatToE4M3(-448.f), 0xFE);
  EXPECT_EQ(FloatToE5M2(57344.f), 0x7B);
  EXPECT_EQ(FloatToE5M2(-57344.f), 0xFB);
  EXPECT_EQ(E4M3ToFloat(0x7E), 448.f);
  EXPECT_EQ(E5M2ToFloat(0x7B), 57344.f);
  EXPECT_EQ(Fp8Max(Fp8Format::kE4M3), 448.f);
  EXPECT_EQ(Fp8Max(Fp8Format::kE5M2), 57344.f);
  // The next code below max.
  EXPECT_EQ(FloatToE4M3(416.f), 0x7D);
  EXPECT_EQ(FloatToE5M2(49152.f), 0x7A);
}

TEST(Fp8FormatTest, SubnormalsAndSmallestNormals) {
  // E4M3: subnormal unit 2^-9, smallest normal 2^-6. E5M2: unit 2^-16, smallest normal 2^-14.
  EXPECT_EQ(FloatToE4M3(0x1p-9f), 0x01);
  EXPECT_EQ(FloatToE4M3(7 * 0x1p-9f), 0x07);
  EXPECT_EQ(FloatToE4M3(0x1p-6f), 0x08);
  EXPECT_EQ(FloatToE4M3(-0x1p-9f), 0x81);
  EXPECT_EQ(E4M3ToFloat(0x01), 0x1p-9f);
  EXPECT_EQ(E4M3ToFloat(0x07), 7 * 0x1p-9f);
  EXPECT_EQ(E4M3ToFloat(0x08), 0x1p-6f);
  EXPECT_EQ(FloatToE5M2(0x1p-16f), 0x01);
  EXPECT_EQ(FloatToE5M2(3 * 0x1p-16f), 0x03);
  EXPECT_EQ(FloatToE5M2(0x1p-14f), 0x04);
  EXPECT_EQ(E5M2ToFloat(0x01), 0x1p-16f);
  EXPECT_EQ(E5M2ToFloat(0x04), 0x1p-14f);
  // Largest subnormal plus half a unit rounds up into the smallest normal (7.5 -> 8 units).
  EXPECT_EQ(FloatToE4M3(7.5f * 0x1p-9f), 0x08);
  // Float subnormals are far below half an FP8 unit.
  EXPECT_EQ(FloatToE4M3(std::numeric_limits<float>::denorm_min()), 0x00);
  EXPECT_EQ(FloatToE5M2(-std::numeric_limits<float>::denorm_min()), 0x80);
}

TEST(Fp8FormatTest, HalfwayCasesRoundToEven) {
  // 1 + 1/16 lies halfway between 1.0 (0x38, even) and 1.125 (0x39).
  EXPECT_EQ(FloatToE4M3(1.0625f), 0x38);
  // 1.1875 lies halfway between 1.125 (0x39) and 1.25 (0x3A, even).
  EXPECT_EQ(FloatToE4M3(1.1875f), 0x3A);
  // Just above the halfway point rounds up.
  EXPECT_EQ(FloatToE4M3(std::nextafter(1.0625f, 2.f)), 0x39);
  // E5M2: 1.125 between 1.0 (0x3C) and 1.25 (0x3D) -> 0x3C; 1.375 -> 1.5 (0x3E).
  EXPECT_EQ(FloatToE5M2(1.125f), 0x3C);
  EXPECT_EQ(FloatToE5M2(1.375f), 0x3E);
  // Subnormal halfway cases: 0.5 unit -> 0, 1.5 units -> 2, 2.5 units -> 2.
  EXPECT_EQ(FloatToE4M3(0x1p-10f), 0x00);
  EXPECT_EQ(FloatToE4M3(std::nextafter(0x1p-10f, 1.f)), 0x01);
  EXPECT_EQ(FloatToE4M3(3 * 0x1p-10f), 0x02);
  EXPECT_EQ(FloatToE4M3(5 * 0x1p-10f), 0x02);
  EXPECT_EQ(FloatToE5M2(0x1p-17f), 0x00);
  EXPECT_EQ(FloatToE5M2(3 * 0x1p-17f), 0x02);
  EXPECT_EQ(FloatToE5M2(-0x1p-17f), 0x80);
}

TEST(Fp8FormatTest, FiniteOverflowSaturatesToMax) {
  for (float x : {449.f, 464.f, 465.f, 1000.f, 1e30f, std::numeric_limits<float>::max()}) {
    EXPECT_EQ(FloatToE4M3(x), 0x7E) << x;
    EXPECT_EQ(FloatToE4M3(-x), 0xFE) << x;
  }
  // 60000 still rounds down to 57344; from 61440 (halfway to 2^16) on it saturates.
  EXPECT_EQ(FloatToE5M2(60000.f), 0x7B);
  EXPECT_EQ(FloatToE5M2(std::nextafter(61440.f, 0.f)), 0x7B);
  for (float x : {61440.f, 65536.f, 1e10f, std::numeric_limits<float>::max()}) {
    EXPECT_EQ(FloatToE5M2(x), 0x7B) << x;
    EXPECT_EQ(FloatToE5M2(-x), 0xFB) << x;
  }
}

TEST(Fp8FormatTest, InfinitySaturatesUnderSatfinite) {
  EXPECT_EQ(FloatToE4M3(kInf), 0x7E);
  EXPECT_EQ(FloatToE4M3(-kInf), 0xFE);
  EXPECT_EQ(FloatToE5M2(kInf), 0x7B);
  EXPECT_EQ(FloatToE5M2(-kInf), 0xFB);
  // E5M2 still decodes its infinity codes.
  EXPECT_EQ(E5M2ToFloat(0x7C), kInf);
  EXPECT_EQ(E5M2ToFloat(0xFC), -kInf);
}

TEST(Fp8FormatTest, NaNEncodesTo0x7FWhateverItsSignOrPayload) {
  const float signaling = std::numeric_limits<float>::signaling_NaN();
  const float payload = std::bit_cast<float>(0x7F800001u);
  for (float nan : {kNaN, -kNaN, signaling, payload, -payload}) {
    EXPECT_EQ(FloatToE4M3(nan), 0x7F);
    EXPECT_EQ(FloatToE5M2(nan), 0x7F);
  }
  EXPECT_TRUE(std::isnan(E4M3ToFloat(0x7F)));
  EXPECT_TRUE(std::isnan(E4M3ToFloat(0xFF)));
  for (uint8_t code : {0x7D, 0x7E, 0x7F, 0xFD, 0xFE, 0xFF}) {
    EXPECT_TRUE(std::isnan(E5M2ToFloat(code))) << int(code);
  }
}

TEST(Fp8FormatTest, SignedZeroKeepsItsSign) {
  EXPECT_EQ(FloatToE4M3(0.f), 0x00);
  EXPECT_EQ(FloatToE4M3(-0.f), 0x80);
  EXPECT_EQ(FloatToE5M2(-0.f), 0x80);
  EXPECT_EQ(FloatToE4M3(-1e-30f), 0x80);
  EXPECT_TRUE(std::signbit(E4M3ToFloat(0x80)));
  EXPECT_EQ(E4M3ToFloat(0x80), 0.f);
  EXPECT_TRUE(std::signbit(E5M2ToFloat(0x80)));
}

TEST(Fp8FormatTest, EveryCodeRoundTripsThroughFloat) {
  for (Fp8Format format : {Fp8Format::kE4M3, Fp8Format::kE5M2}) {
    int nan_codes = 0;
    for (int code = 0; code < 256; ++code) {
      const float value = Fp8ToFloat(static_cast<uint8_t>(code), format);
      if (std::isnan(value)) {
        ++nan_codes;
        continue;
      }
      if (std::isinf(value)) continue;  // E5M2 +-inf saturate to +-max under SATFINITE
      EXPECT_EQ(FloatToFp8(value, format), code) << Fp8FormatName(format) << " code " << code;
    }
    EXPECT_EQ(nan_codes, format == Fp8Format::kE4M3 ? 2 : 6) << Fp8FormatName(format);
  }
}

TEST(Fp8FormatTest, DecodedValuesAreOrderedWithinEachSign) {
  // Positive codes below the special ones increase strictly with the code.
  for (Fp8Format format : {Fp8Format::kE4M3, Fp8Format::kE5M2}) {
    const int top = format == Fp8Format::kE4M3 ? 0x7E : 0x7B;
    for (int code = 1; code <= top; ++code) {
      EXPECT_LT(Fp8ToFloat(code - 1, format), Fp8ToFloat(code, format)) << code;
      EXPECT_EQ(Fp8ToFloat(code | 0x80, format), -Fp8ToFloat(code, format)) << code;
    }
  }
}

#if FP8D_HAVE_CUDA_HEADERS

struct Mismatch {
  uint32_t bits;
  const char* format;
  int ours, cuda;
};

// The comparison below runs 2^33 reference conversions; GCC vectorizes cuda_fp8.h's branchy
// host path only at -O3, which halves this test's time in the default RelWithDebInfo build.
#if defined(__GNUC__) && !defined(__clang__)
#define FP8D_VECTORIZE __attribute__((optimize("O3")))
#else
#define FP8D_VECTORIZE
#endif

// Number of mismatching conversions (both formats) for the `n` patterns from `first` on.
FP8D_VECTORIZE int64_t CountMismatches(uint32_t first, uint32_t n) {
  int64_t mismatches = 0;
  for (uint32_t i = 0; i < n; ++i) {
    const float x = std::bit_cast<float>(first + i);
    mismatches += FloatToE4M3(x) != __nv_cvt_float_to_fp8(x, __NV_SATFINITE, __NV_E4M3);
    mismatches += FloatToE5M2(x) != __nv_cvt_float_to_fp8(x, __NV_SATFINITE, __NV_E5M2);
  }
  return mismatches;
}

void CollectMismatches(uint32_t first, uint32_t n, std::vector<Mismatch>* out) {
  for (uint32_t i = 0; i < n && out->size() < 10; ++i) {
    const uint32_t bits = first + i;
    const float x = std::bit_cast<float>(bits);
    const int cuda_e4 = __nv_cvt_float_to_fp8(x, __NV_SATFINITE, __NV_E4M3);
    const int cuda_e5 = __nv_cvt_float_to_fp8(x, __NV_SATFINITE, __NV_E5M2);
    if (FloatToE4M3(x) != cuda_e4) out->push_back({bits, "e4m3", FloatToE4M3(x), cuda_e4});
    if (FloatToE5M2(x) != cuda_e5) out->push_back({bits, "e5m2", FloatToE5M2(x), cuda_e5});
  }
}

// Compares the float patterns [begin, end) chunk by chunk; chunks with mismatches are scanned
// again to keep the first few as examples.
void CompareRange(uint64_t begin, uint64_t end, std::atomic<int64_t>* mismatches, std::mutex* mu,
                  std::vector<Mismatch>* examples) {
  constexpr uint32_t kChunk = 1 << 16;
  for (uint64_t first = begin; first < end; first += kChunk) {
    const int64_t n = CountMismatches(static_cast<uint32_t>(first), kChunk);
    if (n == 0) continue;
    *mismatches += n;
    std::lock_guard<std::mutex> lock(*mu);
    CollectMismatches(static_cast<uint32_t>(first), kChunk, examples);
  }
}

TEST(Fp8FormatCudaTest, AllFloatBitPatternsMatchCudaSatfiniteConversion) {
  // Two threads: the build machine has two cores, and each pattern costs four conversions.
  constexpr int kThreads = 2;
  constexpr uint64_t kPatterns = uint64_t{1} << 32;
  std::atomic<int64_t> mismatches{0};
  std::mutex mu;
  std::vector<Mismatch> examples;
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back(CompareRange, kPatterns * t / kThreads, kPatterns * (t + 1) / kThreads,
                         &mismatches, &mu, &examples);
  }
  for (std::thread& t : threads) t.join();
  std::string report;
  for (const Mismatch& m : examples) {
    report += absl::StrFormat("  0x%08x %s: ours 0x%02x, cuda 0x%02x\n", m.bits, m.format, m.ours,
                              m.cuda);
  }
  EXPECT_EQ(mismatches.load(), 0) << "first mismatches:\n" << report;
}

TEST(Fp8FormatCudaTest, AllCodesDecodeLikeCuda) {
  for (int code = 0; code < 256; ++code) {
    __nv_fp8_e4m3 e4;
    e4.__x = static_cast<__nv_fp8_storage_t>(code);
    __nv_fp8_e5m2 e5;
    e5.__x = static_cast<__nv_fp8_storage_t>(code);
    const float cuda_e4 = static_cast<float>(e4);
    const float cuda_e5 = static_cast<float>(e5);
    const uint8_t c = static_cast<uint8_t>(code);
    if (std::isnan(cuda_e4)) {
      EXPECT_TRUE(std::isnan(E4M3ToFloat(c))) << code;
    } else {
      EXPECT_EQ(std::bit_cast<uint32_t>(E4M3ToFloat(c)), std::bit_cast<uint32_t>(cuda_e4)) << code;
    }
    if (std::isnan(cuda_e5)) {
      EXPECT_TRUE(std::isnan(E5M2ToFloat(c))) << code;
    } else {
      EXPECT_EQ(std::bit_cast<uint32_t>(E5M2ToFloat(c)), std::bit_cast<uint32_t>(cuda_e5)) << code;
    }
  }
}

#else

TEST(Fp8FormatCudaTest, AllFloatBitPatternsMatchCudaSatfiniteConversion) {
  GTEST_SKIP() << "built without the CUDA toolkit: cuda_fp8.h is not available";
}

#endif  // FP8D_HAVE_CUDA_HEADERS

}  // namespace
}  // namespace fp8d
