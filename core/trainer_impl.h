// Internal to the trainer: the concrete Trainer (TrainingLoop) shared by trainer.cc (the step
// loop and Trainer::Create), trainer_requests.cc (requests from other threads and the step
// boundary that applies them) and trainer_checkpoints.cc (save, prune, resume).
//
// Threading: one thread runs Run(); request methods may be called from any other thread (and
// non-blocking ones from the MetricSink, which runs on the training thread). Requests only queue
// work and set flags under `mu_`; the loop applies them at step boundaries, so the engine is only
// ever touched by the training thread and a step always runs with one recipe from start to end.
#pragma once

#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <string>
#include <thread>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "core/data_loader.h"
#include "core/engine.h"
#include "core/lr_schedule.h"
#include "core/recipe_config.h"
#include "core/rng.h"
#include "core/trainer.h"
#include "fp8d/v1/checkpoint.pb.h"
#include "fp8d/v1/job.pb.h"

namespace fp8d {

inline constexpr char kCheckpointPrefix[] = "step-";
inline constexpr char kCheckpointSuffix[] = ".safetensors";

// FAILED_PRECONDITION when the engine's device lists `name` as unsupported ("mxfp8: needs
// sm_100 or newer"), so the user learns what the recipe needs instead of a silent fallback.
absl::Status CheckDeviceSupports(const DeviceInfo& device, const std::string& name);

// "step-00000042.safetensors"
std::string CheckpointFileName(int64_t step);

class TrainingLoop final : public Trainer {
 public:
  TrainingLoop(fp8d::v1::JobSpec spec, std::unique_ptr<Engine> engine,
               std::unique_ptr<DataLoader> data, TrainerOptions options, MetricSink* sink)
      : spec_(std::move(spec)),
        engine_(std::move(engine)),
        data_(std::move(data)),
        options_(std::move(options)),
        sink_(sink),
        schedule_(spec_.optimizer().lr(), spec_.optimizer().min_lr(),
                  spec_.optimizer().warmup_steps(), spec_.steps()),
        rng_(spec_.seed()),
        flops_per_token_(engine_->model().TrainFlopsPerToken(spec_.seq_len())),
        tokens_per_step_(int64_t{spec_.batch_size()} * spec_.seq_len() * spec_.grad_accum()) {
    recipe_ = spec_.recipe();
    fp8d::v1::RecipeChange* initial = history_.Add();
    initial->set_step(1);
    initial->set_version(1);
    *initial->mutable_recipe() = recipe_;
    initial->set_amax_handling(fp8d::v1::AMAX_KEEP);
    UpdatePlan();
  }

  absl::Status ResumeFrom(const std::string& checkpoint_path) override;
  absl::StatusOr<RunOutcome> Run() override;
  absl::StatusOr<RecipeChangeTicket> RequestRecipeChange(const fp8d::v1::Recipe& recipe,
                                                         fp8d::v1::AmaxHandling handling,
                                                         bool checkpoint_first) override;
  absl::StatusOr<std::string> RequestCheckpoint() override;
  void RequestPause() override;
  void RequestResume() override;
  void RequestCancel() override;
  void RequestStop(bool checkpoint) override;
  TrainerSnapshot Snapshot() const override;

 private:
  // Work queued by a request, done by the loop at the next step boundary. Requests that return a
  // result wait on `done`.
  struct Command {
    enum class Kind { kRecipeChange, kCheckpoint } kind;
    fp8d::v1::Recipe recipe;
    RecipeConfig config;
    fp8d::v1::AmaxHandling handling = fp8d::v1::AMAX_KEEP;
    bool checkpoint_first = false;
    RecipeChangeTicket ticket;
    bool done = false;
    absl::Status status;
    std::string checkpoint;
  };

  // The loop's answer at a boundary: go on with the next step, or end the run.
  enum class Boundary { kContinue, kCancelled, kStopped };

  absl::StatusOr<Boundary> AtBoundary();
  absl::Status Execute(Command& command);
  absl::StatusOr<StepResult> RunStep();
  void PublishStep(const StepResult& result, int64_t step_index);
  absl::Status Evaluate();
  absl::StatusOr<std::string> SaveCheckpoint();
  void PruneCheckpoints(const std::string& keep);
  void FinishCommands(const absl::Status& why);
  void UpdatePlan();
  bool OnTrainingThread() const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    return running_ && run_thread_ == std::this_thread::get_id();
  }

  void Emit(fp8d::v1::MetricRecord record);
  void EmitEvent(const std::string& kind, const std::string& message,
                 const std::function<void(fp8d::v1::Event*)>& fill = nullptr);

  // Fixed at creation; read by the training thread only (except where noted).
  const fp8d::v1::JobSpec spec_;
  const std::unique_ptr<Engine> engine_;
  const std::unique_ptr<DataLoader> data_;
  const TrainerOptions options_;
  MetricSink* const sink_;
  const LrSchedule schedule_;
  // The trainer's own random stream. No part of a step draws from it yet; it advances once per
  // step and is saved in checkpoints, so stochastic features can be added without breaking
  // exact resume of existing checkpoints.
  Rng rng_;
  const double flops_per_token_;
  const int64_t tokens_per_step_;

  // Training-thread state.
  google::protobuf::RepeatedPtrField<fp8d::v1::RecipeChange> history_;
  int64_t skipped_steps_ = 0;
  int64_t tokens_seen_ = 0;
  std::string resumed_from_;
  int64_t log_window_tokens_ = 0;
  double log_window_seconds_ = 0;
  int64_t last_eval_step_ = -1;
  int64_t last_checkpoint_step_ = -1;

  // Shared with requesting threads.
  mutable absl::Mutex mu_;
  absl::CondVar cv_;
  int64_t step_ ABSL_GUARDED_BY(mu_) = 0;            // optimizer steps completed
  bool in_step_ ABSL_GUARDED_BY(mu_) = false;        // a step is being computed
  bool running_ ABSL_GUARDED_BY(mu_) = false;
  std::thread::id run_thread_ ABSL_GUARDED_BY(mu_);
  bool ended_ ABSL_GUARDED_BY(mu_) = false;
  bool paused_ ABSL_GUARDED_BY(mu_) = false;
  bool pause_requested_ ABSL_GUARDED_BY(mu_) = false;
  bool cancel_requested_ ABSL_GUARDED_BY(mu_) = false;
  bool stop_requested_ ABSL_GUARDED_BY(mu_) = false;
  bool stop_checkpoint_ ABSL_GUARDED_BY(mu_) = false;
  std::deque<std::shared_ptr<Command>> queue_ ABSL_GUARDED_BY(mu_);
  int32_t recipe_version_ ABSL_GUARDED_BY(mu_) = 1;  // active
  int32_t next_version_ ABSL_GUARDED_BY(mu_) = 2;    // handed to the next accepted change
  fp8d::v1::Recipe recipe_ ABSL_GUARDED_BY(mu_);
  float last_loss_ ABSL_GUARDED_BY(mu_) = 0.f;
  std::string latest_checkpoint_ ABSL_GUARDED_BY(mu_);
  LayerPlan plan_ ABSL_GUARDED_BY(mu_);             // for the next step
};

}  // namespace fp8d
