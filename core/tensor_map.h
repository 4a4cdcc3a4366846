// Named FP32 tensors: the engine-neutral form of training state. Checkpoints store exactly
// this map, so a checkpoint written by one engine loads into the other.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <vector>

namespace fp8d {

struct HostTensor {
  std::vector<int64_t> shape;
  std::vector<float> data;

  int64_t numel() const {
    int64_t n = 1;
    for (int64_t d : shape) n *= d;
    return n;
  }
};

// Ordered so that serialisation is deterministic.
using TensorMap = std::map<std::string, HostTensor>;

}  // namespace fp8d
