// The training loop (job runner): schedule, micro-batches, eval, checkpoints, metric
// publication, and commands (recipe change, checkpoint, pause, cancel, stop) applied only at
// step boundaries. Drives any Engine. Thread-safe: Run() on one thread, requests from others.
#pragma once

#include <atomic>
#include <cstdint>
#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "core/engine.h"
#include "fp8d/v1/job.pb.h"
#include "fp8d/v1/telemetry.pb.h"

namespace fp8d {

// Receives everything the trainer reports, on the training thread. Implementations must be
// fast and never block on clients (the daemon appends to a log and notifies followers).
class MetricSink {
 public:
  virtual ~MetricSink() = default;
  virtual void OnMetric(const fp8d::v1::MetricRecord& record) = 0;
  virtual void OnAmax(const fp8d::v1::AmaxRecord& record) = 0;
};

struct TrainerOptions {
  std::string checkpoint_dir;   // checkpoints are written here as step-%08d.safetensors
  std::string data_root;        // relative data paths resolve here; paths outside are refused
  int keep_checkpoints = 0;     // 0 keeps all
};

enum class RunOutcome { kSucceeded, kCancelled, kStopped };

struct RecipeChangeTicket {
  int32_t version = 0;
  int64_t effective_step = 0;   // the change applies before this (1-based) step runs
  std::string checkpoint;       // path, when checkpoint_first
};

struct TrainerSnapshot {
  int64_t step = 0;             // optimizer steps completed
  int64_t total_steps = 0;
  float last_loss = 0.f;
  int32_t recipe_version = 0;
  fp8d::v1::Recipe recipe;
  bool paused = false;
  std::string latest_checkpoint;
  int fp8_layers = 0;
  int total_layers = 0;
  std::vector<std::string> fp8_layer_names;
};

class Trainer {
 public:
  // `spec` must come from ResolveJobSpec (defaults filled in, validated).
  static absl::StatusOr<std::unique_ptr<Trainer>> Create(const fp8d::v1::JobSpec& spec,
                                                         std::unique_ptr<Engine> engine,
                                                         const TrainerOptions& options,
                                                         MetricSink* sink);
  virtual ~Trainer() = default;

  // Restores weights, optimizer, FP8 state, data position, RNG and recipe from a checkpoint, so
  // that the remaining steps give bit-identical losses to an uninterrupted run.
  virtual absl::Status ResumeFrom(const std::string& checkpoint_path) = 0;

  // Trains until the last step (kSucceeded: final checkpoint written), a cancel (kCancelled),
  // or a stop request (kStopped: checkpoint written if asked). Blocks while paused.
  virtual absl::StatusOr<RunOutcome> Run() = 0;

  // Validated immediately (INVALID_ARGUMENT naming the field; FAILED_PRECONDITION for a recipe
  // the engine cannot run); applied at the next step boundary. Blocks until applied when
  // checkpoint_first so the ticket can name the checkpoint.
  virtual absl::StatusOr<RecipeChangeTicket> RequestRecipeChange(
      const fp8d::v1::Recipe& recipe, fp8d::v1::AmaxHandling handling, bool checkpoint_first) = 0;
  // Writes a checkpoint at the next step boundary and returns its path (blocks until written).
  virtual absl::StatusOr<std::string> RequestCheckpoint() = 0;
  virtual void RequestPause() = 0;
  virtual void RequestResume() = 0;
  virtual void RequestCancel() = 0;
  // Ends Run() at the next boundary with kStopped, checkpointing first when asked (SIGTERM).
  virtual void RequestStop(bool checkpoint) = 0;

  virtual TrainerSnapshot Snapshot() const = 0;
};

}  // namespace fp8d
