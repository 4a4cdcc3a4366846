// Checkpoints of a running job: writing them (engine state plus CheckpointMetadata), keeping
// only the newest when asked, and resuming from one so that the rest of the run is bit-identical.
#include <algorithm>
#include <filesystem>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/time/clock.h"
#include "core/checkpoint.h"
#include "core/trainer_impl.h"

namespace fp8d {

namespace fs = std::filesystem;

std::string CheckpointFileName(int64_t step) {
  return absl::StrFormat("%s%08d%s", kCheckpointPrefix, step, kCheckpointSuffix);
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
  absl::StatusOr<std::string> written = WriteCheckpoint(path, *state, meta);
  if (!written.ok()) return written.status();
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
    fs::remove(files[i] + kCheckpointShaSuffix, ec);
  }
}

}  // namespace fp8d
