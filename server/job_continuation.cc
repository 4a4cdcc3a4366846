// Continuing a job: SubmitJobRequest.continue_from names a checkpoint of another job (often a
// finished or cancelled one); the new job starts from it instead of from scratch. The checkpoint
// is checked at submission (it exists, holds the same model, and is before the new job's last
// step) and becomes the new job's own when it first runs, so from then on the ordinary resume
// path applies and deleting the old job cannot take it away.
#include <filesystem>

#include "absl/strings/str_cat.h"
#include "core/checkpoint.h"
#include "server/job_registry.h"
#include "server/resource_names.h"
#include "spdlog/spdlog.h"

namespace fp8d {
namespace fs = std::filesystem;
namespace v1 = fp8d::v1;

absl::StatusOr<std::string> JobRegistry::ResolveContinueFrom(const std::string& continue_from,
                                                             const v1::JobSpec& spec) {
  auto parsed = ParseCheckpointName(continue_from, /*allow_job_only=*/true);
  if (!parsed.ok()) {
    return absl::InvalidArgumentError(
        absl::StrCat("continue_from: ", parsed.status().message()));
  }
  auto file = CheckpointFile(continue_from);
  if (!file.ok()) {
    return absl::Status(file.status().code(),
                        absl::StrCat("continue_from: ", file.status().message()));
  }
  const auto& [checkpoint, path] = *file;
  auto meta = ReadCheckpointMetadata(path);
  if (!meta.ok()) {
    return absl::Status(meta.status().code(),
                        absl::StrCat("continue_from ", checkpoint, ": ", meta.status().message()));
  }
  if (meta->spec().model().SerializeAsString() != spec.model().SerializeAsString()) {
    return absl::InvalidArgumentError(absl::StrCat(
        "model: differs from the model of continue_from ", checkpoint,
        "; a job continues with the model it was trained with"));
  }
  if (meta->step() >= spec.steps()) {
    return absl::InvalidArgumentError(absl::StrCat(
        "steps ", spec.steps(), " must exceed the step of continue_from ", checkpoint, " (",
        meta->step(), "): raise `steps` to train further"));
  }
  return checkpoint;
}

absl::Status JobRegistry::AdoptContinuedCheckpoint(const std::string& job_id) {
  std::string from;
  {
    absl::MutexLock lock(&mu_);
    from = jobs_[job_id].record.job().continued_from();
  }
  const std::string own_dir = store_.CheckpointDir(job_id);
  if (from.empty() || !catalog_.List(job_id, own_dir).empty()) return absl::OkStatus();
  auto file = CheckpointFile(from);
  if (!file.ok()) {
    return absl::Status(file.status().code(), absl::StrCat("the checkpoint this job continues "
                                                           "from is gone: ",
                                                           file.status().message()));
  }
  const fs::path source = file->second;
  const fs::path target = fs::path(own_dir) / source.filename();
  std::error_code ec;
  fs::create_directories(own_dir, ec);
  // A hard link shares the bytes (checkpoints of big models are large); a state dir spread over
  // file systems gets a copy.
  fs::create_hard_link(source, target, ec);
  if (ec) {
    ec.clear();
    const fs::path partial = target.string() + ".tmp";  // never listed as a checkpoint
    fs::copy_file(source, partial, fs::copy_options::overwrite_existing, ec);
    if (!ec) fs::rename(partial, target, ec);
  }
  if (ec) {
    return absl::InternalError(absl::StrCat("cannot take over ", from, " as ", target.string(),
                                            ": ", ec.message()));
  }
  // Its SHA-256 record goes with it (pulls check against it); without one the catalog verifies
  // the checkpoint's content hash and hashes the file instead.
  const std::string record = source.string() + kCheckpointShaSuffix;
  if (fs::exists(record, ec)) {
    fs::copy_file(record, target.string() + kCheckpointShaSuffix,
                  fs::copy_options::overwrite_existing, ec);
  }
  spdlog::info("{}: starts from {}", JobName(job_id), from);
  return absl::OkStatus();
}

}  // namespace fp8d
