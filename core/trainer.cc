// The training loop. One thread runs Run(); request methods may be called from any other thread
// (and from the MetricSink, which runs on the training thread). Requests only queue work and set
// flags under `mu_`; the loop applies them at step boundaries, so the engine is only ever touched
// by the training thread and a step always runs with one recipe from start to end.
#include "core/trainer.h"

#include <algorithm>
#include <chrono>
#include <functional>
#include <cmath>
#include <deque>
#include <filesystem>
#include <optional>
#include <thread>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "core/checkpoint.h"
#include "core/data_loader.h"
#include "core/job_spec.h"
#include "core/lr_schedule.h"
#include "core/recipe_config.h"
#include "core/rng.h"
#include "spdlog/spdlog.h"

namespace fp8d {
namespace {

namespace fs = std::filesystem;

constexpr char kCheckpointPrefix[] = "step-";
constexpr char kCheckpointSuffix[] = ".safetensors";
constexpr double kLn2 = 0.69314718055994530942;

// FAILED_PRECONDITION when the engine's device lists `name` as unsupported ("mxfp8: needs
// sm_100 or newer"), so the user learns what the recipe needs instead of a silent fallback.
absl::Status CheckDeviceSupports(const DeviceInfo& device, const std::string& name) {
  for (const std::string& entry : device.unsupported_recipes) {
    if (entry == name || absl::StartsWith(entry, absl::StrCat(name, ":"))) {
      const std::string why = entry.size() > name.size() + 1 ? entry.substr(name.size() + 1) : "";
      return absl::FailedPreconditionError(absl::StrCat(
          "recipe.name = \"", name, "\" cannot run on the ", device.engine, " engine (",
          device.name, "):", why.empty() ? " not supported" : why));
    }
  }
  return absl::OkStatus();
}

std::string CheckpointFileName(int64_t step) {
  return absl::StrFormat("%s%08d%s", kCheckpointPrefix, step, kCheckpointSuffix);
}

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

void TrainingLoop::Emit(fp8d::v1::MetricRecord record) {
  if (sink_ == nullptr) return;
  if (record.unix_micros() == 0) record.set_unix_micros(absl::ToUnixMicros(absl::Now()));
  sink_->OnMetric(record);
}

void TrainingLoop::EmitEvent(const std::string& kind, const std::string& message,
                             const std::function<void(fp8d::v1::Event*)>& fill) {
  fp8d::v1::MetricRecord record;
  fp8d::v1::Event* event = record.mutable_event();
  event->set_kind(kind);
  event->set_message(message);
  {
    absl::MutexLock lock(&mu_);
    event->set_step(step_);
    event->set_recipe_version(recipe_version_);
  }
  if (fill) fill(event);
  Emit(std::move(record));
}

void TrainingLoop::UpdatePlan() {
  int64_t next;
  {
    absl::MutexLock lock(&mu_);
    next = step_;
  }
  LayerPlan plan = engine_->PlanLayers(next);
  absl::MutexLock lock(&mu_);
  plan_ = std::move(plan);
}

absl::Status TrainingLoop::ResumeFrom(const std::string& checkpoint_path) {
  {
    absl::MutexLock lock(&mu_);
    if (running_ || ended_) {
      return absl::FailedPreconditionError("ResumeFrom must be called before Run");
    }
  }
  absl::StatusOr<LoadedCheckpoint> loaded = ReadCheckpoint(checkpoint_path);
  if (!loaded.ok()) return loaded.status();
  const fp8d::v1::CheckpointMetadata& meta = loaded->meta;
  if (meta.spec().model().SerializeAsString() != spec_.model().SerializeAsString()) {
    return absl::FailedPreconditionError(absl::StrCat(
        "checkpoint ", checkpoint_path, " holds a different model than this job's `model`"));
  }
  if (meta.step() < 0 || meta.step() > spec_.steps()) {
    return absl::FailedPreconditionError(absl::StrCat("checkpoint ", checkpoint_path, " is at step ",
                                                      meta.step(), ", beyond this job's ",
                                                      spec_.steps(), " steps"));
  }
  absl::StatusOr<RecipeConfig> recipe = ResolveRecipe(meta.recipe());
  if (!recipe.ok()) return recipe.status();
  absl::Status s = CheckDeviceSupports(engine_->device(), meta.recipe().name());
  if (!s.ok()) return s;
  // The recipe first: it decides which FP8 scaling tensors the engine state contains.
  s = engine_->SetRecipe(*recipe, fp8d::v1::AMAX_KEEP);
  if (!s.ok()) return s;
  s = engine_->LoadState(loaded->tensors);
  if (!s.ok()) return s;
  s = data_->Restore(meta.data());
  if (!s.ok()) return s;

  rng_.set_state(meta.rng_state());
  skipped_steps_ = meta.skipped_steps();
  tokens_seen_ = meta.tokens_seen();
  history_ = meta.recipe_history();
  resumed_from_ = checkpoint_path;
  last_checkpoint_step_ = meta.step();
  {
    absl::MutexLock lock(&mu_);
    step_ = meta.step();
    recipe_ = ToProto(*recipe);
    recipe_version_ = meta.recipe_version();
    next_version_ = meta.recipe_version() + 1;
    latest_checkpoint_ = checkpoint_path;
  }
  UpdatePlan();
  return absl::OkStatus();
}

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

absl::StatusOr<StepResult> TrainingLoop::RunStep() {
  int64_t index;
  {
    absl::MutexLock lock(&mu_);
    index = step_;
  }
  std::vector<TokenBatch> micro_batches;
  micro_batches.reserve(spec_.grad_accum());
  for (int i = 0; i < spec_.grad_accum(); ++i) micro_batches.push_back(data_->NextTrainBatch());

  OptimizerStepArgs args;
  args.step = index;
  args.lr = schedule_.At(index);
  args.beta1 = spec_.optimizer().beta1();
  args.beta2 = spec_.optimizer().beta2();
  args.eps = spec_.optimizer().eps();
  args.weight_decay = spec_.optimizer().weight_decay();
  args.grad_clip = spec_.optimizer().grad_clip();

  const auto start = std::chrono::steady_clock::now();
  absl::StatusOr<StepResult> result = engine_->TrainStep(micro_batches, args);
  const double seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  if (!result.ok()) {
    absl::MutexLock lock(&mu_);
    in_step_ = false;
    return result.status();
  }
  rng_.NextU64();
  tokens_seen_ += tokens_per_step_;
  log_window_tokens_ += tokens_per_step_;
  log_window_seconds_ += seconds;
  if (result->skipped) ++skipped_steps_;
  {
    absl::MutexLock lock(&mu_);
    step_ = index + 1;
    in_step_ = false;
    last_loss_ = result->loss;
  }
  return result;
}

void TrainingLoop::PublishStep(const StepResult& result, int64_t step_index) {
  const int64_t step = step_index + 1;
  if (result.skipped) {
    EmitEvent("step_skipped",
              absl::StrFormat("step %d skipped: non-finite loss (%g) or gradient norm (%g); "
                              "parameters unchanged",
                              step, result.loss, result.grad_norm));
  }
  if (step % spec_.log_interval() == 0 || step == spec_.steps()) {
    const LayerPlan plan = engine_->PlanLayers(step_index);
    fp8d::v1::MetricRecord record;
    fp8d::v1::StepMetrics* m = record.mutable_step();
    m->set_step(step);
    m->set_total_steps(spec_.steps());
    m->set_loss(result.loss);
    m->set_lr(schedule_.At(step_index));
    m->set_grad_norm(result.grad_norm);
    const double tokens_per_sec =
        log_window_seconds_ > 0 ? log_window_tokens_ / log_window_seconds_ : 0.0;
    m->set_tokens_per_sec(tokens_per_sec);
    const double tflops = tokens_per_sec * flops_per_token_ / 1e12;
    m->set_model_tflops(tflops);
    const double peak = engine_->device().peak_bf16_tflops;
    m->set_mfu(peak > 0 ? tflops / peak : 0.0);
    const int64_t window_steps = std::max<int64_t>(1, log_window_tokens_ / tokens_per_step_);
    m->set_step_time_ms(1e3 * log_window_seconds_ / window_steps);
    m->set_memory_bytes(engine_->MemoryBytes());
    {
      absl::MutexLock lock(&mu_);
      m->set_recipe_version(recipe_version_);
      m->set_recipe_name(recipe_.name());
    }
    m->set_fp8_layers(plan.fp8_count());
    m->set_total_layers(static_cast<int32_t>(plan.layers.size()));
    m->set_skipped_steps(skipped_steps_);
    m->set_tokens_seen(tokens_seen_);
    log_window_tokens_ = 0;
    log_window_seconds_ = 0;
    Emit(std::move(record));
  }
  if (engine_->recipe().is_fp8() && sink_ != nullptr) {
    fp8d::v1::AmaxRecord amax = engine_->AmaxTelemetry();
    amax.set_step(step);
    {
      absl::MutexLock lock(&mu_);
      amax.set_recipe_version(recipe_version_);
    }
    sink_->OnAmax(amax);
  }
}

absl::Status TrainingLoop::Evaluate() {
  const int64_t batches = std::min<int64_t>(spec_.eval_batches(), data_->NumValBatches());
  int64_t step;
  {
    absl::MutexLock lock(&mu_);
    step = step_;
  }
  last_eval_step_ = step;
  if (batches <= 0) {
    spdlog::warn("step {}: no validation batches, eval skipped", step);
    return absl::OkStatus();
  }
  double sum = 0;
  for (int64_t i = 0; i < batches; ++i) {
    absl::StatusOr<float> loss = engine_->EvalLoss(data_->ValBatch(i));
    if (!loss.ok()) return loss.status();
    sum += *loss;
  }
  const float loss = static_cast<float>(sum / batches);
  fp8d::v1::MetricRecord record;
  record.mutable_eval()->set_step(step);
  record.mutable_eval()->set_loss(loss);
  // One token is one byte for byte-level text; for token shards bytes per token is unknown.
  if (data_->byte_level()) record.mutable_eval()->set_bits_per_byte(loss / kLn2);
  Emit(std::move(record));
  return absl::OkStatus();
}

absl::StatusOr<std::string> TrainingLoop::SaveCheckpoint() {
  fp8d::v1::CheckpointMetadata meta;
  meta.set_format_version(kCheckpointFormatVersion);
  *meta.mutable_spec() = spec_;
  {
    absl::MutexLock lock(&mu_);
    meta.set_step(step_);
    *meta.mutable_recipe() = recipe_;
    meta.set_recipe_version(recipe_version_);
  }
  *meta.mutable_recipe_history() = history_;
  *meta.mutable_data() = data_->Position();
  meta.set_rng_state(rng_.state());
  meta.set_engine(engine_->device().engine);
  meta.set_skipped_steps(skipped_steps_);
  meta.set_tokens_seen(tokens_seen_);
  meta.set_unix_micros(absl::ToUnixMicros(absl::Now()));

  absl::StatusOr<TensorMap> state = engine_->SaveState();
  if (!state.ok()) return state.status();
  const std::string path =
      (fs::path(options_.checkpoint_dir) / CheckpointFileName(meta.step())).string();
  absl::Status s = WriteCheckpoint(path, *state, meta);
  if (!s.ok()) return s;
  last_checkpoint_step_ = meta.step();
  {
    absl::MutexLock lock(&mu_);
    latest_checkpoint_ = path;
  }
  EmitEvent("checkpoint_saved", absl::StrCat("checkpoint at step ", meta.step(), ": ", path),
            [&](fp8d::v1::Event* e) { e->set_checkpoint(path); });
  PruneCheckpoints(path);
  return path;
}

// Keeps the newest `keep_checkpoints` step-*.safetensors files (names sort by step).
void TrainingLoop::PruneCheckpoints(const std::string& keep) {
  if (options_.keep_checkpoints <= 0) return;
  std::vector<std::string> files;
  std::error_code ec;
  for (const auto& entry : fs::directory_iterator(options_.checkpoint_dir, ec)) {
    const std::string name = entry.path().filename().string();
    if (absl::StartsWith(name, kCheckpointPrefix) && absl::EndsWith(name, kCheckpointSuffix))
      files.push_back(entry.path().string());
  }
  std::sort(files.begin(), files.end());
  const int excess = static_cast<int>(files.size()) - options_.keep_checkpoints;
  for (int i = 0; i < excess; ++i) {
    if (files[i] == keep) continue;
    fs::remove(files[i], ec);
  }
}

void TrainingLoop::FinishCommands(const absl::Status& why) {
  absl::MutexLock lock(&mu_);
  ended_ = true;
  running_ = false;
  in_step_ = false;
  for (const std::shared_ptr<Command>& command : queue_) {
    command->status = why;
    command->done = true;
  }
  queue_.clear();
}

absl::StatusOr<RunOutcome> TrainingLoop::Run() {
  int64_t start_step;
  {
    absl::MutexLock lock(&mu_);
    if (running_ || ended_) return absl::FailedPreconditionError("Run may be called once");
    running_ = true;
    run_thread_ = std::this_thread::get_id();
    start_step = step_;
  }
  const TrainerSnapshot snap = Snapshot();
  const std::string layers = absl::StrCat(snap.fp8_layers, "/", snap.total_layers, " layers FP8");
  if (resumed_from_.empty()) {
    EmitEvent("started", absl::StrCat(spec_.steps(), " steps, recipe ", snap.recipe.name(), ", ",
                                      layers, ", engine ", engine_->device().engine));
  } else {
    EmitEvent("resumed_from_checkpoint",
              absl::StrCat("resumed from ", resumed_from_, " at step ", start_step, " of ",
                           spec_.steps(), ", recipe ", snap.recipe.name(), ", ", layers),
              [&](fp8d::v1::Event* e) { e->set_checkpoint(resumed_from_); });
  }

  auto fail = [&](const absl::Status& s) -> absl::Status {
    EmitEvent("failed", std::string(s.message()));
    FinishCommands(absl::FailedPreconditionError(absl::StrCat("the job failed: ", s.message())));
    return s;
  };

  while (true) {
    int64_t done_steps;
    {
      absl::MutexLock lock(&mu_);
      done_steps = step_;
    }
    if (done_steps >= spec_.steps()) break;
    absl::StatusOr<Boundary> boundary = AtBoundary();
    if (!boundary.ok()) return fail(boundary.status());
    if (*boundary == Boundary::kCancelled) {
      EmitEvent("cancelled", absl::StrCat("cancelled after step ", done_steps));
      FinishCommands(absl::FailedPreconditionError("the job was cancelled"));
      return RunOutcome::kCancelled;
    }
    if (*boundary == Boundary::kStopped) {
      EmitEvent("stopped", absl::StrCat("stopped after step ", done_steps));
      FinishCommands(absl::FailedPreconditionError("the job was stopped"));
      return RunOutcome::kStopped;
    }
    absl::StatusOr<StepResult> result = RunStep();
    if (!result.ok()) return fail(result.status());
    PublishStep(*result, done_steps);
    UpdatePlan();
    const int64_t step = done_steps + 1;
    if (step == spec_.steps()) break;
    if (spec_.eval_interval() > 0 && step % spec_.eval_interval() == 0) {
      absl::Status s = Evaluate();
      if (!s.ok()) return fail(s);
    }
    if (spec_.checkpoint_interval() > 0 && step % spec_.checkpoint_interval() == 0) {
      absl::StatusOr<std::string> path = SaveCheckpoint();
      if (!path.ok()) return fail(path.status());
    }
  }

  // Last step done (or a resume from the final checkpoint). Queued recipe changes can no longer
  // apply; queued checkpoint requests are answered with the final checkpoint.
  {
    absl::MutexLock lock(&mu_);
    std::deque<std::shared_ptr<Command>> checkpoints;
    for (const std::shared_ptr<Command>& command : queue_) {
      if (command->kind == Command::Kind::kCheckpoint) {
        checkpoints.push_back(command);
      } else {
        command->status =
            absl::FailedPreconditionError("the job finished before the recipe change applied");
        command->done = true;
      }
    }
    queue_.swap(checkpoints);
  }
  int64_t final_step;
  {
    absl::MutexLock lock(&mu_);
    final_step = step_;
  }
  if (last_eval_step_ != final_step) {
    absl::Status s = Evaluate();
    if (!s.ok()) return fail(s);
  }
  std::string final_checkpoint;
  if (last_checkpoint_step_ != final_step) {
    absl::StatusOr<std::string> path = SaveCheckpoint();
    if (!path.ok()) return fail(path.status());
    final_checkpoint = *path;
  } else {
    absl::MutexLock lock(&mu_);
    final_checkpoint = latest_checkpoint_;
  }
  {
    absl::MutexLock lock(&mu_);
    for (const std::shared_ptr<Command>& command : queue_) {
      command->checkpoint = final_checkpoint;
      command->done = true;
    }
    queue_.clear();
  }
  EmitEvent("finished", absl::StrCat("finished ", final_step, " steps; final checkpoint ",
                                     final_checkpoint),
            [&](fp8d::v1::Event* e) { e->set_checkpoint(final_checkpoint); });
  FinishCommands(absl::FailedPreconditionError("the job has finished"));
  return RunOutcome::kSucceeded;
}

}  // namespace

absl::StatusOr<std::unique_ptr<Trainer>> Trainer::Create(const fp8d::v1::JobSpec& spec,
                                                         std::unique_ptr<Engine> engine,
                                                         const TrainerOptions& options,
                                                         MetricSink* sink) {
  if (engine == nullptr) return absl::InvalidArgumentError("Trainer::Create: no engine");
  if (options.checkpoint_dir.empty()) {
    return absl::InvalidArgumentError("TrainerOptions.checkpoint_dir is required");
  }
  // Resolving is idempotent; doing it here means a spec that skipped it cannot run with
  // unset fields.
  absl::StatusOr<fp8d::v1::JobSpec> resolved = ResolveJobSpec(spec);
  if (!resolved.ok()) return resolved.status();
  absl::StatusOr<ModelConfig> model = ResolveModelConfig(resolved->model());
  if (!model.ok()) return model.status();
  if (ToProto(*model).SerializeAsString() != ToProto(engine->model()).SerializeAsString()) {
    return absl::InvalidArgumentError(
        "the engine was created for a different model than the job's `model`");
  }
  absl::StatusOr<RecipeConfig> recipe = ResolveRecipe(resolved->recipe());
  if (!recipe.ok()) return recipe.status();
  absl::Status s = CheckDeviceSupports(engine->device(), resolved->recipe().name());
  if (!s.ok()) return s;
  if (ToProto(engine->recipe()).SerializeAsString() != resolved->recipe().SerializeAsString()) {
    s = engine->SetRecipe(*recipe, fp8d::v1::AMAX_KEEP);
    if (!s.ok()) return s;
  }
  absl::StatusOr<std::unique_ptr<DataLoader>> data =
      DataLoader::Open(resolved->data(), options.data_root, model->vocab_size,
                       resolved->batch_size(), resolved->seq_len(), resolved->seed());
  if (!data.ok()) return data.status();
  return std::unique_ptr<Trainer>(new TrainingLoop(*std::move(resolved), std::move(engine),
                                                   *std::move(data), options, sink));
}

}  // namespace fp8d
