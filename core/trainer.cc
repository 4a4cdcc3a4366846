// The step loop: micro-batches, learning rate, engine step, metrics, amax records, eval and
// scheduled checkpoints; and Trainer::Create. See core/trainer_impl.h for the threading rules.
#include "core/trainer.h"

#include <algorithm>
#include <chrono>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/time/clock.h"
#include "core/checkpoint.h"
#include "core/job_spec.h"
#include "core/model_config.h"
#include "core/trainer_impl.h"
#include "spdlog/spdlog.h"

namespace fp8d {
namespace {

constexpr double kLn2 = 0.69314718055994530942;

}  // namespace

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
  // The amax record goes out before the step's metric record, so a client that has seen step N
  // in the metric stream finds step N's amax in the amax stream too.
  if (engine_->recipe().is_fp8() && sink_ != nullptr) {
    fp8d::v1::AmaxRecord amax = engine_->AmaxTelemetry();
    amax.set_step(step);
    {
      absl::MutexLock lock(&mu_);
      amax.set_recipe_version(recipe_version_);
    }
    sink_->OnAmax(amax);
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

absl::StatusOr<std::unique_ptr<Trainer>> Trainer::Create(const fp8d::v1::JobSpec& spec,
                                                         std::unique_ptr<Engine> engine,
                                                         const TrainerOptions& options,
                                                         MetricSink* sink) {
  if (engine == nullptr) return absl::InvalidArgumentError("Trainer::Create: no engine");
  if (options.checkpoint_dir.empty()) {
    return absl::InvalidArgumentError("TrainerOptions.checkpoint_dir is required");
  }
  if (const int removed = RemoveStaleCheckpointFiles(options.checkpoint_dir); removed > 0) {
    spdlog::info("{}: removed {} files left by interrupted checkpoint writes",
                 options.checkpoint_dir, removed);
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
