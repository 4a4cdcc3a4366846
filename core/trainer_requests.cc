// Requests from other threads (recipe change, checkpoint, pause, resume, cancel, stop), the
// snapshot they read, and the step boundary where the training thread applies them.
#include <deque>
#include <memory>

#include "absl/strings/str_cat.h"
#include "core/trainer_impl.h"
#include "spdlog/spdlog.h"

namespace fp8d {

absl::StatusOr<RecipeChangeTicket> TrainingLoop::RequestRecipeChange(
    const fp8d::v1::Recipe& recipe, fp8d::v1::AmaxHandling handling, bool checkpoint_first) {
  absl::StatusOr<RecipeConfig> config = ResolveRecipe(recipe);
  if (!config.ok()) return config.status();
  absl::Status s = CheckDeviceSupports(engine_->device(), recipe.name());
  if (!s.ok()) return s;
  if (handling == fp8d::v1::AMAX_HANDLING_UNSPECIFIED) handling = fp8d::v1::AMAX_KEEP;

  auto command = std::make_shared<Command>();
  command->kind = Command::Kind::kRecipeChange;
  command->recipe = ToProto(*config);
  command->config = *config;
  command->handling = handling;
  command->checkpoint_first = checkpoint_first;

  absl::MutexLock lock(&mu_);
  if (ended_ || step_ >= spec_.steps()) {
    return absl::FailedPreconditionError("the job has ended: its recipe can no longer change");
  }
  if (checkpoint_first && OnTrainingThread()) {
    return absl::FailedPreconditionError(
        "a recipe change with checkpoint_first waits for the training thread, so it cannot be "
        "requested from it (e.g. from a MetricSink)");
  }
  command->ticket.version = next_version_++;
  // A step in flight finishes under the old recipe; the change applies before the one after.
  command->ticket.effective_step = step_ + (in_step_ ? 2 : 1);
  queue_.push_back(command);
  cv_.SignalAll();
  if (!checkpoint_first) return command->ticket;
  mu_.Await(absl::Condition(
      +[](Command* c) { return c->done; }, command.get()));
  if (!command->status.ok()) return command->status;
  return command->ticket;
}

absl::StatusOr<std::string> TrainingLoop::RequestCheckpoint() {
  auto command = std::make_shared<Command>();
  command->kind = Command::Kind::kCheckpoint;
  absl::MutexLock lock(&mu_);
  if (ended_) return absl::FailedPreconditionError("the job has ended");
  if (OnTrainingThread()) {
    return absl::FailedPreconditionError(
        "a checkpoint request waits for the training thread, so it cannot be made from it "
        "(e.g. from a MetricSink)");
  }
  queue_.push_back(command);
  cv_.SignalAll();
  mu_.Await(absl::Condition(
      +[](Command* c) { return c->done; }, command.get()));
  if (!command->status.ok()) return command->status;
  return command->checkpoint;
}

void TrainingLoop::RequestPause() {
  absl::MutexLock lock(&mu_);
  pause_requested_ = true;
  cv_.SignalAll();
}

void TrainingLoop::RequestResume() {
  absl::MutexLock lock(&mu_);
  pause_requested_ = false;
  cv_.SignalAll();
}

void TrainingLoop::RequestCancel() {
  absl::MutexLock lock(&mu_);
  cancel_requested_ = true;
  cv_.SignalAll();
}

void TrainingLoop::RequestStop(bool checkpoint) {
  absl::MutexLock lock(&mu_);
  stop_requested_ = true;
  stop_checkpoint_ = stop_checkpoint_ || checkpoint;
  cv_.SignalAll();
}

TrainerSnapshot TrainingLoop::Snapshot() const {
  absl::MutexLock lock(&mu_);
  TrainerSnapshot s;
  s.step = step_;
  s.total_steps = spec_.steps();
  s.last_loss = last_loss_;
  s.recipe_version = recipe_version_;
  s.recipe = recipe_;
  s.paused = paused_;
  s.latest_checkpoint = latest_checkpoint_;
  s.fp8_layers = plan_.fp8_count();
  s.total_layers = static_cast<int>(plan_.layers.size());
  for (size_t i = 0; i < plan_.layers.size(); ++i)
    if (plan_.fp8[i]) s.fp8_layer_names.push_back(plan_.layers[i]);
  return s;
}

absl::Status TrainingLoop::Execute(Command& command) {
  if (command.kind == Command::Kind::kCheckpoint) {
    absl::StatusOr<std::string> path = SaveCheckpoint();
    if (!path.ok()) return path.status();
    command.checkpoint = *path;
    return absl::OkStatus();
  }
  if (command.checkpoint_first) {
    absl::StatusOr<std::string> path = SaveCheckpoint();
    if (!path.ok()) return path.status();
    command.checkpoint = *path;
    command.ticket.checkpoint = *path;
  }
  absl::Status s = engine_->SetRecipe(command.config, command.handling);
  if (!s.ok()) return s;
  int64_t effective;
  {
    absl::MutexLock lock(&mu_);
    effective = step_ + 1;
    recipe_ = command.recipe;
    recipe_version_ = command.ticket.version;
  }
  command.ticket.effective_step = effective;
  fp8d::v1::RecipeChange* change = history_.Add();
  change->set_step(effective);
  change->set_version(command.ticket.version);
  *change->mutable_recipe() = command.recipe;
  change->set_amax_handling(command.handling);
  UpdatePlan();
  const TrainerSnapshot snap = Snapshot();
  EmitEvent("recipe_changed",
            absl::StrCat("recipe ", command.recipe.name(), " (version ", command.ticket.version,
                         ") applies from step ", effective, ": ", snap.fp8_layers, "/",
                         snap.total_layers, " layers FP8"),
            [&](fp8d::v1::Event* e) {
              *e->mutable_recipe() = command.recipe;
              e->set_amax_handling(command.handling);
            });
  return absl::OkStatus();
}

absl::StatusOr<TrainingLoop::Boundary> TrainingLoop::AtBoundary() {
  while (true) {
    std::deque<std::shared_ptr<Command>> commands;
    bool cancel, stop, stop_checkpoint, want_pause, was_paused;
    {
      absl::MutexLock lock(&mu_);
      commands.swap(queue_);
      cancel = cancel_requested_;
      stop = stop_requested_;
      stop_checkpoint = stop_checkpoint_;
      want_pause = pause_requested_;
      was_paused = paused_;
    }
    for (const std::shared_ptr<Command>& command : commands) {
      absl::Status s = Execute(*command);
      if (!s.ok()) spdlog::error("command at step boundary failed: {}", s.ToString());
      absl::MutexLock lock(&mu_);
      command->status = s;
      command->done = true;
    }
    if (cancel) return Boundary::kCancelled;
    if (stop) {
      if (stop_checkpoint) {
        absl::StatusOr<std::string> path = SaveCheckpoint();
        if (!path.ok()) return path.status();
      }
      return Boundary::kStopped;
    }
    if (want_pause) {
      if (!was_paused) {
        {
          absl::MutexLock lock(&mu_);
          paused_ = true;
        }
        EmitEvent("paused", "paused at the step boundary");
      }
      // Sleep until something needs the loop: new work, resume, cancel or stop.
      absl::MutexLock lock(&mu_);
      mu_.Await(absl::Condition(
          +[](TrainingLoop* t) ABSL_EXCLUSIVE_LOCKS_REQUIRED(t->mu_) {
            return !t->queue_.empty() || !t->pause_requested_ || t->cancel_requested_ ||
                   t->stop_requested_;
          },
          this));
      continue;
    }
    if (was_paused) {
      {
        absl::MutexLock lock(&mu_);
        paused_ = false;
      }
      EmitEvent("resumed", "training resumed");
    }
    absl::MutexLock lock(&mu_);
    if (!queue_.empty() || pause_requested_ || cancel_requested_ || stop_requested_) continue;
    in_step_ = true;
    return Boundary::kContinue;
  }
}

}  // namespace fp8d
