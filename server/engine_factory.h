// Picks the engine for a job: `cpu`, `cuda`, or `auto` (CUDA when a GPU is present).
#pragma once

#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "core/engine.h"

namespace fp8d {

// Names accepted by --engine.
inline constexpr const char* kEngineChoices = "auto, cpu, cuda";

// Device description without creating an engine (for GetServerInfo).
absl::StatusOr<DeviceInfo> ProbeDevice(const std::string& engine_choice);

// Creates an engine for `model` with `recipe`, seeded initial weights. RESOURCE_EXHAUSTED when
// the model will not fit (estimated before allocating); FAILED_PRECONDITION when the engine
// cannot run the recipe (mxfp8 on Hopper) or `cuda` is asked for without a GPU.
absl::StatusOr<std::unique_ptr<Engine>> CreateEngine(const std::string& engine_choice,
                                                     const ModelConfig& model,
                                                     const RecipeConfig& recipe, int max_batch,
                                                     int max_seq_len, uint64_t seed);

}  // namespace fp8d
