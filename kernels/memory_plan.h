// GPU memory planned once, at engine creation, from the model and the largest batch shape:
// every buffer the step touches (FP32 master weights and their BF16 copy, FP32 gradients, AdamW
// moments, saved activations, backward scratch, GEMM/attention workspaces) is a region of one
// slab. The estimate is checked against the GPU's free memory before anything is allocated, so a
// job that cannot fit fails with RESOURCE_EXHAUSTED and the numbers, not with an OOM mid-step.
#pragma once

#include <cstddef>
#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "core/model_config.h"

namespace fp8d::kernels {

// What a region holds, for the RESOURCE_EXHAUSTED message and the memory telemetry.
enum class MemoryCategory { kParameters, kGradients, kOptimizer, kActivations, kWorkspace };

// Every region starts on this boundary (cuBLASLt and vectorised kernels want 16 B; 256 B keeps
// regions on separate cache-line groups).
inline constexpr size_t kRegionAlignment = 256;
// Held back for the CUDA context's own needs, cuBLASLt/cuDNN handles and kernel images, which
// are allocated outside the slab.
inline constexpr int64_t kRuntimeReserveBytes = int64_t{768} << 20;

struct MemoryRegion {
  std::string name;
  MemoryCategory category;
  size_t offset = 0;
  size_t bytes = 0;
};

class MemoryPlan {
 public:
  // Appends a region; names are unique (a duplicate is a programming error and aborts).
  void Add(const std::string& name, MemoryCategory category, size_t bytes);

  size_t slab_bytes() const { return end_; }
  // Slab plus the runtime reserve: what must be free on the device for the job to start.
  int64_t Estimate() const { return static_cast<int64_t>(end_) + kRuntimeReserveBytes; }
  size_t CategoryBytes(MemoryCategory category) const;
  // "parameters 1.23 GiB, gradients ..., total 7.89 GiB".
  std::string Summary() const;

  // Offset of a region in the slab; the region must exist.
  size_t OffsetOf(const std::string& name) const;
  bool Contains(const std::string& name) const { return index_.count(name) > 0; }
  const std::vector<MemoryRegion>& regions() const { return regions_; }

 private:
  std::vector<MemoryRegion> regions_;
  std::map<std::string, size_t> index_;
  size_t end_ = 0;
};

// RESOURCE_EXHAUSTED with both numbers and the plan's breakdown when `needed` > `free_bytes`.
absl::Status CheckFits(const MemoryPlan& plan, int64_t free_bytes, int64_t total_bytes);

// Batch shape the plan is sized for.
struct BatchShape {
  int batch = 0;
  int seq_len = 0;
  int64_t tokens() const { return int64_t{batch} * seq_len; }
};

// The CudaEngine's full plan for `model` at `shape` in BF16 training. Region names are the
// engine's: "param.f32", "param.bf16", "grad.f32", "adam.m", "adam.v", "act.<layer>.<what>",
// "scratch.<what>", "ws.<what>".
MemoryPlan PlanTrainingMemory(const ModelConfig& model, const BatchShape& shape,
                              size_t attention_workspace_bytes, size_t norm_workspace_bytes);

// Rows of the LM head processed at once: logits for this many tokens exist at a time.
int64_t LmHeadChunkRows(const ModelConfig& model, const BatchShape& shape);

// One slab of device memory carved by a plan. Owns the allocation.
class DeviceSlab {
 public:
  // Checks free memory (cudaMemGetInfo) against plan.Estimate() first, then allocates once.
  static absl::StatusOr<DeviceSlab> Allocate(const MemoryPlan& plan);
  DeviceSlab() = default;
  DeviceSlab(DeviceSlab&& other) noexcept;
  DeviceSlab& operator=(DeviceSlab&& other) noexcept;
  DeviceSlab(const DeviceSlab&) = delete;
  DeviceSlab& operator=(const DeviceSlab&) = delete;
  ~DeviceSlab();

  template <typename T>
  T* Get(const MemoryPlan& plan, const std::string& name) const {
    return reinterpret_cast<T*>(base_ + plan.OffsetOf(name));
  }
  char* base() const { return base_; }
  size_t bytes() const { return bytes_; }

 private:
  char* base_ = nullptr;
  size_t bytes_ = 0;
};

}  // namespace fp8d::kernels
