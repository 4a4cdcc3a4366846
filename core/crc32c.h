// CRC-32C (Castagnoli), the checksum of both record framings the project writes: fp8d's own
// metric and amax logs (core/metric_log.h) and TensorBoard's TFRecord event files
// (core/tfrecord.h), which store it "masked".
#pragma once

#include <cstddef>
#include <cstdint>

namespace fp8d {

// CRC-32C of `size` bytes, continuing from `crc` (0 to start). Crc32c("123456789") = 0xE3069283.
uint32_t Crc32c(const void* data, size_t size, uint32_t crc = 0);

// TFRecord's masked CRC-32C: rotate right by 15 and add 0xa282ead8, so that a CRC stored inside
// the data it covers does not make the checksum of the whole trivially predictable.
uint32_t MaskCrc32c(uint32_t crc);
uint32_t UnmaskCrc32c(uint32_t masked);

}  // namespace fp8d
