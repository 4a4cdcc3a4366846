#include "server/job_registry.h"

#include <algorithm>
#include <filesystem>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/time/clock.h"
#include "core/data_loader.h"
#include "core/job_spec.h"
#include "core/metric_log.h"
#include "core/model_config.h"
#include "core/path_confinement.h"
#include "core/recipe_config.h"
#include "server/engine_factory.h"
#include "server/fit_estimate.h"
#include "server/request_limits.h"
#include "server/resource_names.h"
#include "spdlog/spdlog.h"

#ifndef FP8D_VERSION
#define FP8D_VERSION "dev"
#endif

namespace fp8d {
namespace fs = std::filesystem;
namespace v1 = fp8d::v1;

namespace {

int64_t NowMicros() { return absl::ToUnixMicros(absl::Now()); }

bool IsTerminal(v1::JobState s) {
  return s == v1::SUCCEEDED || s == v1::FAILED || s == v1::CANCELLED;
}

std::string StateName(v1::JobState s) { return v1::JobState_Name(s); }

// The trainer reports checkpoint file paths; the API shows resource names.
std::string CheckpointNameFromPath(const std::string& job_id, const std::string& path) {
  std::string file = fs::path(path).filename().string();
  if (absl::EndsWith(file, kCheckpointSuffix)) {
    file.resize(file.size() - std::string(kCheckpointSuffix).size());
  }
  return CheckpointResourceName(job_id, file);
}

std::string JobIdOf(const v1::JobRecord& r) { return r.job().name().substr(5); }  // "jobs/"

// The largest step a job's metric log records: how far the job got, whatever its record says
// (the record is written on state changes, not on every step).
int64_t LastLoggedStep(const std::string& metric_log) {
  int64_t last = 0, offset = 0;
  for (int reads = 0; reads < 1'000'000; ++reads) {  // bounded: each read advances
    auto read = ReadMetricLog(metric_log, 0, 0, offset);
    if (!read.ok() || read->records.empty()) break;
    for (const auto& r : read->records) last = std::max(last, MetricRecordStep(r));
    offset = read->next_offset;
  }
  return last;
}

// The submission number at the end of a job id ("demo-12" -> 12), 0 when there is none.
int64_t SeqOfId(const std::string& id) {
  const size_t dash = id.rfind('-');
  int64_t seq = 0;
  if (dash == std::string::npos || !absl::SimpleAtoi(id.substr(dash + 1), &seq)) return 0;
  return seq;
}

}  // namespace

JobRegistry::JobRegistry(RegistryOptions options, DeviceInfo device)
    : options_(std::move(options)), device_(std::move(device)), store_(options_.state_dir) {}

JobRegistry::~JobRegistry() { Shutdown(); }

absl::Status JobRegistry::Load() {
  if (absl::Status s = store_.Init(); !s.ok()) return s;
  RemoveDeletedJobDirs();
  JobStore::Loaded loaded = store_.LoadAll();
  for (const auto& r : loaded.restored) {
    spdlog::warn("state dir: job record restored from its backup copy: {}", r);
  }
  absl::MutexLock lock(&mu_);
  for (auto& record : loaded.records) {
    const std::string id = JobIdOf(record);
    Entry& entry = jobs_[id];
    entry.record = std::move(record);
    next_seq_ = std::max(next_seq_, entry.record.queue_seq() + 1);
    if (!entry.record.request_id().empty()) by_request_id_[entry.record.request_id()] = id;
    v1::Job& job = *entry.record.mutable_job();
    if (job.state() == v1::RUNNING || job.state() == v1::PAUSED) {
      // The daemon died under this job (kill -9, power loss): it runs again, from its latest
      // intact checkpoint or, when it had none yet, from step 0 (training is deterministic, so
      // the steps it re-runs are the ones it lost).
      job.set_step(std::max(job.step(), LastLoggedStep(store_.MetricLogPath(id))));
      auto checkpoints = catalog_.List(id, store_.CheckpointDir(id));
      job.set_state(v1::QUEUED);
      if (checkpoints.empty()) {
        job.set_reason(absl::StrCat("restarting from step 0 after a daemon restart: the daemon "
                                    "stopped at step ", job.step(),
                                    ", before the job's first checkpoint"));
      } else {
        job.set_reason(absl::StrCat("resuming from ", checkpoints.back().name(), " (step ",
                                    checkpoints.back().step(), ") after a daemon restart at step ",
                                    job.step()));
      }
      Persist(entry);
      spdlog::info("{}: {} ({})", job.name(), StateName(job.state()), job.reason());
    }
    if (IsTerminal(job.state())) {
      entry.feeds->metrics.Close();
      entry.feeds->amax.Close();
    }
  }
  for (const auto& [id, why] : loaded.damaged) {
    // Shown, never run, never overwritten: its files stay as they are for the operator.
    Entry& entry = jobs_[id];
    entry.damaged = true;
    entry.record.set_queue_seq(SeqOfId(id));
    next_seq_ = std::max(next_seq_, entry.record.queue_seq() + 1);
    v1::Job& job = *entry.record.mutable_job();
    job.set_name(JobName(id));
    job.set_state(v1::FAILED);
    job.set_reason(absl::StrCat("job record damaged: ", why, "; the job cannot run again, its "
                                "logs and checkpoints are kept in ", store_.JobDir(id)));
    entry.feeds->metrics.Close();
    entry.feeds->amax.Close();
    spdlog::error("{}: {}", job.name(), job.reason());
  }
  spdlog::info("state dir {}: {} jobs, {} queued", options_.state_dir, jobs_.size(), QueuedCount());
  return absl::OkStatus();
}

void JobRegistry::Start() { scheduler_ = std::thread([this] { SchedulerLoop(); }); }

bool JobRegistry::shutting_down() const {
  absl::MutexLock lock(&mu_);
  return shutdown_;
}

void JobRegistry::Shutdown() {
  std::shared_ptr<Trainer> trainer;
  {
    absl::MutexLock lock(&mu_);
    if (!shutdown_) {
      shutdown_ = true;
      if (auto it = jobs_.find(running_); it != jobs_.end()) {
        it->second.stop_for_shutdown = true;
        trainer = it->second.trainer;
      }
      changed_.SignalAll();
    }
  }
  if (trainer) {
    spdlog::info("stopping the running job with a checkpoint");
    trainer->RequestStop(/*checkpoint=*/true);
  }
  if (scheduler_.joinable()) scheduler_.join();
  absl::MutexLock lock(&mu_);
  for (auto& [id, entry] : jobs_) {
    entry.feeds->metrics.Close();
    entry.feeds->amax.Close();
  }
}

int JobRegistry::QueuedCount() const {
  int n = 0;
  for (const auto& [id, e] : jobs_) n += e.record.job().state() == v1::QUEUED;
  return n;
}

void JobRegistry::SchedulerLoop() {
  while (true) {
    std::string next;
    {
      absl::MutexLock lock(&mu_);
      while (!shutdown_) {
        const Entry* best = nullptr;
        for (const auto& [id, e] : jobs_) {
          if (e.record.job().state() == v1::QUEUED &&
              (best == nullptr || e.record.queue_seq() < best->record.queue_seq())) {
            best = &e;
          }
        }
        if (best != nullptr) {
          next = JobIdOf(best->record);
          break;
        }
        changed_.Wait(&mu_);
      }
      if (shutdown_) return;
      running_ = next;
    }
    RunJob(next);
    absl::MutexLock lock(&mu_);
    running_.clear();
    changed_.SignalAll();
  }
}

void JobRegistry::RunJob(const std::string& id) {
  v1::JobSpec spec;
  std::shared_ptr<JobFeeds> feeds;
  {
    absl::MutexLock lock(&mu_);
    spec = jobs_[id].record.job().spec();
    feeds = jobs_[id].feeds;
  }
  auto model = ResolveModelConfig(spec.model());
  auto recipe = ResolveRecipe(spec.recipe());
  if (!model.ok() || !recipe.ok()) {
    Finish(id, v1::FAILED, (!model.ok() ? model.status() : recipe.status()).ToString());
    return;
  }
  auto engine = CreateEngine(options_.engine_choice, *model, *recipe, spec.batch_size(),
                             spec.seq_len(), spec.seed());
  if (!engine.ok()) {
    Finish(id, v1::FAILED, absl::StrCat("engine: ", engine.status().ToString()));
    return;
  }
  auto telemetry = JobTelemetry::Open(
      id, store_.JobDir(id), feeds, [this, id](const v1::MetricRecord& r) { OnMetric(id, r); },
      spec.steps());
  if (!telemetry.ok()) {
    Finish(id, v1::FAILED, absl::StrCat("metric log: ", telemetry.status().ToString()));
    return;
  }
  TrainerOptions trainer_options;
  trainer_options.checkpoint_dir = store_.CheckpointDir(id);
  trainer_options.data_root = options_.data_root;
  auto created = Trainer::Create(spec, *std::move(engine), trainer_options, telemetry->get());
  if (!created.ok()) {
    Finish(id, v1::FAILED, created.status().ToString());
    return;
  }
  std::shared_ptr<Trainer> trainer = *std::move(created);
  if (absl::Status s = AdoptContinuedCheckpoint(id); !s.ok()) {
    Finish(id, v1::FAILED, s.ToString());
    return;
  }
  // Resume from the newest checkpoint that reads back intact; a damaged one (DATA_LOSS: its
  // content hash fails, before any state is loaded) is passed over with an event.
  auto checkpoints = catalog_.List(id, store_.CheckpointDir(id));
  std::vector<std::string> damaged;
  bool resumed = checkpoints.empty();
  for (auto it = checkpoints.rbegin(); it != checkpoints.rend() && !resumed; ++it) {
    const std::string& name = it->name();
    const std::string path =
        (fs::path(store_.CheckpointDir(id)) /
         absl::StrCat(name.substr(name.rfind('/') + 1), kCheckpointSuffix))
            .string();
    absl::Status s = trainer->ResumeFrom(path);
    if (s.ok()) {
      resumed = true;
      spdlog::info("{}: resumed from {}", JobName(id), name);
      break;
    }
    if (!absl::IsDataLoss(s)) {
      Finish(id, v1::FAILED, absl::StrCat("cannot resume from ", name, ": ", s.ToString()));
      return;
    }
    damaged.push_back(absl::StrCat(name, ": ", s.message()));
    spdlog::warn("{}: skipping damaged checkpoint {}: {}", JobName(id), name,
                 std::string(s.message()));
    v1::MetricRecord event;
    event.mutable_event()->set_step(it->step());
    event.mutable_event()->set_kind("checkpoint_skipped");
    event.mutable_event()->set_message(absl::StrCat(
        "checkpoint ", name, " is damaged and was skipped: ", s.message(),
        std::next(it) != checkpoints.rend() ? "; trying the one before it" : ""));
    event.mutable_event()->set_checkpoint(path);
    (*telemetry)->OnMetric(event);
  }
  if (!resumed) {
    Finish(id, v1::FAILED, absl::StrCat("every checkpoint of the job is damaged, none to resume "
                                        "from: ", absl::StrJoin(damaged, "; ")));
    return;
  }
  {
    absl::MutexLock lock(&mu_);
    Entry& entry = jobs_[id];
    v1::Job& job = *entry.record.mutable_job();
    if (job.state() != v1::QUEUED || shutdown_) return;  // cancelled or stopping while starting
    const TrainerSnapshot snap = trainer->Snapshot();
    job.set_state(v1::RUNNING);
    job.clear_reason();
    if (job.start_unix_micros() == 0) job.set_start_unix_micros(NowMicros());
    job.set_engine(device_.engine);
    job.set_step(snap.step);
    job.set_total_steps(snap.total_steps);
    job.set_recipe_version(snap.recipe_version);
    *job.mutable_recipe() = snap.recipe;
    job.set_fp8_layers(snap.fp8_layers);
    job.set_total_layers(snap.total_layers);
    entry.record.clear_fp8_layer_names();
    for (const auto& n : snap.fp8_layer_names) entry.record.add_fp8_layer_names(n);
    entry.trainer = trainer;
    Persist(entry);
    changed_.SignalAll();
  }
  spdlog::info("{}: running on {}", JobName(id), device_.engine);
  absl::StatusOr<RunOutcome> outcome = trainer->Run();
  const TrainerSnapshot snap = trainer->Snapshot();

  v1::JobState state = v1::FAILED;
  std::string reason;
  bool stopped = false;
  if (!outcome.ok()) {
    reason = outcome.status().ToString();
  } else if (*outcome == RunOutcome::kSucceeded) {
    state = v1::SUCCEEDED;
  } else if (*outcome == RunOutcome::kCancelled) {
    state = v1::CANCELLED;
    reason = "cancelled by request";
  } else {
    stopped = true;
  }
  {
    absl::MutexLock lock(&mu_);
    Entry& entry = jobs_[id];
    entry.trainer.reset();
    v1::Job& job = *entry.record.mutable_job();
    job.set_step(snap.step);
    job.set_last_loss(snap.last_loss);
    job.set_recipe_version(snap.recipe_version);
    *job.mutable_recipe() = snap.recipe;
    if (!snap.latest_checkpoint.empty()) {
      job.set_latest_checkpoint(CheckpointNameFromPath(id, snap.latest_checkpoint));
    }
    if (stopped) {
      // Stopped by SIGTERM with a checkpoint: first in line on the next start.
      job.set_state(v1::QUEUED);
      job.set_reason(absl::StrCat("stopped by daemon shutdown at step ", snap.step,
                                  "; resumes from its latest checkpoint"));
      Persist(entry);
      return;
    }
  }
  telemetry->reset();  // logs closed before followers see the end
  Finish(id, state, reason);
}

void JobRegistry::Finish(const std::string& id, v1::JobState state, const std::string& reason) {
  absl::MutexLock lock(&mu_);
  Entry& entry = jobs_[id];
  v1::Job& job = *entry.record.mutable_job();
  job.set_state(state);
  job.set_reason(reason);
  job.set_end_unix_micros(NowMicros());
  entry.trainer.reset();
  Persist(entry);
  entry.feeds->metrics.Close();
  entry.feeds->amax.Close();
  changed_.SignalAll();
  if (state == v1::FAILED) {
    spdlog::warn("{}: FAILED: {}", job.name(), reason);
  } else {
    spdlog::info("{}: {}", job.name(), StateName(state));
  }
}

void JobRegistry::OnMetric(const std::string& id, const v1::MetricRecord& record) {
  absl::MutexLock lock(&mu_);
  Entry& entry = jobs_[id];
  v1::Job& job = *entry.record.mutable_job();
  if (record.has_step()) {
    const auto& s = record.step();
    job.set_step(s.step());
    job.set_total_steps(s.total_steps());
    job.set_last_loss(s.loss());
    job.set_recipe_version(s.recipe_version());
    job.set_fp8_layers(s.fp8_layers());
    job.set_total_layers(s.total_layers());
  } else if (record.has_event()) {
    const auto& e = record.event();
    if (e.kind() == "checkpoint_saved" && !e.checkpoint().empty()) {
      job.set_latest_checkpoint(CheckpointNameFromPath(id, e.checkpoint()));
      Persist(entry);  // the restart logic looks for checkpoints on disk; this keeps GetJob exact
    } else if (e.kind() == "recipe_changed") {
      job.set_recipe_version(e.recipe_version());
      if (e.has_recipe()) *job.mutable_recipe() = e.recipe();
      Persist(entry);
    }
  }
}

void JobRegistry::Persist(const Entry& entry) {
  if (entry.damaged) return;  // its files stay as found
  if (absl::Status s = store_.Save(entry.record); !s.ok()) {
    spdlog::error("{}: cannot persist job record: {}", entry.record.job().name(), s.ToString());
  }
}

absl::StatusOr<JobRegistry::Entry*> JobRegistry::Find(const std::string& name) {
  auto id = ParseJobName(name);
  if (!id.ok()) return id.status();
  auto it = jobs_.find(*id);
  if (it == jobs_.end()) return absl::NotFoundError(absl::StrCat("job ", name, " not found"));
  return &it->second;
}

v1::Job JobRegistry::View(const Entry& entry) const { return entry.record.job(); }

absl::Status JobRegistry::CheckRecipeSupported(const std::string& recipe_name) const {
  for (const auto& u : device_.unsupported_recipes) {
    if (absl::StartsWith(u, absl::StrCat(recipe_name, ":")) || u == recipe_name) {
      return absl::FailedPreconditionError(absl::StrCat(
          "recipe.name `", recipe_name, "` is not supported on ", device_.name, " (", u, ")"));
    }
  }
  return absl::OkStatus();
}

absl::Status JobRegistry::ValidateSpec(v1::JobSpec* spec) const {
  // Strings that came in a job file's text are bounded like those of a JobSpec message.
  if (absl::Status s = CheckRequestBounds(*spec, "spec"); !s.ok()) return s;
  // Confinement and the data files themselves, so a job that cannot read its data is refused
  // now instead of failing when it starts.
  if (absl::Status s = CheckDataFiles(spec->data(), options_.data_root); !s.ok()) return s;
  if (absl::Status s = CheckRecipeSupported(spec->recipe().name()); !s.ok()) return s;
  auto model = ResolveModelConfig(spec->model());
  if (!model.ok()) return model.status();
  return CheckFits(*model, spec->batch_size(), spec->seq_len(),
                   device_.memory_bytes);
}

absl::StatusOr<v1::Job> JobRegistry::Submit(const v1::SubmitJobRequest& request) {
  {
    absl::MutexLock lock(&mu_);
    if (shutdown_) return absl::UnavailableError("the daemon is shutting down");
    if (auto it = by_request_id_.find(request.request_id());
        !request.request_id().empty() && it != by_request_id_.end()) {
      return View(jobs_[it->second]);  // idempotent retry
    }
  }
  v1::JobSpec spec;
  if (request.has_spec()) {
    spec = request.spec();
  } else if (!request.spec_text().empty()) {
    const std::string source = request.spec_file().empty() ? "spec_text" : request.spec_file();
    auto parsed = ParseJobText(request.spec_text(), source);
    if (!parsed.ok()) return parsed.status();
    spec = *std::move(parsed);
  } else if (!request.spec_file().empty()) {
    return absl::InvalidArgumentError(absl::StrCat(
        "job file `", request.spec_file(), "` is empty: a job file is a YAML or JSON mapping of "
        "JobSpec fields (name, model, data, steps, ...)"));
  } else {
    return absl::InvalidArgumentError("spec or spec_text is required: send a JobSpec or a job file's text");
  }
  for (int i = 0; i < request.set_size(); ++i) {
    if (absl::Status s = ApplySetOverride(&spec, request.set(i)); !s.ok()) {
      return absl::Status(s.code(), absl::StrCat("set[", i, "] `", request.set(i), "`: ", s.message()));
    }
  }
  auto resolved = ResolveJobSpec(spec);
  if (!resolved.ok()) return resolved.status();
  if (absl::Status s = ValidateSpec(&*resolved); !s.ok()) return s;
  std::string continued_from;
  if (!request.continue_from().empty()) {
    auto from = ResolveContinueFrom(request.continue_from(), *resolved);
    if (!from.ok()) return from.status();
    continued_from = *from;
  }

  absl::MutexLock lock(&mu_);
  if (auto it = by_request_id_.find(request.request_id());
      !request.request_id().empty() && it != by_request_id_.end()) {
    return View(jobs_[it->second]);
  }
  if (const int queued = QueuedCount(); queued >= options_.max_queued_jobs) {
    return absl::ResourceExhaustedError(absl::StrCat("queue is full: ", queued,
                                                     " jobs queued, the limit is ",
                                                     options_.max_queued_jobs));
  }
  std::string id;
  int64_t seq = 0;
  do {  // never an id in use, nor one whose folder is on disk (a damaged or removed job's)
    seq = next_seq_++;
    id = MakeJobId(resolved->name(), seq);
  } while (jobs_.count(id) || fs::exists(store_.JobDir(id)));
  v1::JobRecord record;
  record.set_request_id(request.request_id());
  record.set_queue_seq(seq);
  v1::Job& job = *record.mutable_job();
  job.set_name(JobName(id));
  *job.mutable_spec() = *resolved;
  job.set_state(v1::QUEUED);
  job.set_total_steps(resolved->steps());
  *job.mutable_recipe() = resolved->recipe();
  job.set_recipe_version(1);  // the submitted recipe; UpdateRecipe hands out 2, 3, ...
  job.set_create_unix_micros(NowMicros());
  job.set_continued_from(continued_from);
  // All or nothing: a job exists once its record is on disk, and only then.
  if (absl::Status s = store_.Save(record); !s.ok()) {
    std::error_code ec;
    fs::remove_all(store_.JobDir(id), ec);
    return absl::UnavailableError(absl::StrCat("the job could not be stored: ", s.message()));
  }
  Entry& entry = jobs_[id];
  entry.record = std::move(record);
  if (!request.request_id().empty()) by_request_id_[request.request_id()] = id;
  changed_.SignalAll();
  spdlog::info("{}: submitted ({} steps, recipe {})", entry.record.job().name(),
               entry.record.job().total_steps(), entry.record.job().recipe().name());
  return View(entry);
}

absl::StatusOr<v1::Job> JobRegistry::Get(const std::string& name) {
  absl::MutexLock lock(&mu_);
  auto entry = Find(name);
  if (!entry.ok()) return entry.status();
  return View(**entry);
}

absl::StatusOr<v1::ListJobsResponse> JobRegistry::List(int page_size, const std::string& token) {
  if (page_size < 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("page_size ", page_size, " is out of range: allowed 0..", kMaxPageSize,
                     " (0 = ", kDefaultPageSize, ")"));
  }
  const int size = page_size == 0 ? kDefaultPageSize : std::min(page_size, kMaxPageSize);
  int64_t after = 0;
  if (!token.empty() && (!absl::SimpleAtoi(token, &after) || after < 0)) {
    return absl::InvalidArgumentError(
        absl::StrCat("page_token `", token, "` is not a token from a previous ListJobs reply"));
  }
  absl::MutexLock lock(&mu_);
  std::vector<const Entry*> entries;
  for (const auto& [id, e] : jobs_) {
    if (e.record.queue_seq() > after) entries.push_back(&e);
  }
  std::sort(entries.begin(), entries.end(), [](const Entry* a, const Entry* b) {
    return a->record.queue_seq() < b->record.queue_seq();
  });
  // A page ends at `size` jobs or kMaxListResponseBytes, whichever comes first (at least one
  // job), so a reply always fits a client's message limit.
  v1::ListJobsResponse response;
  size_t bytes = 0, taken = 0;
  for (; taken < entries.size() && taken < static_cast<size_t>(size); ++taken) {
    v1::Job view = View(*entries[taken]);
    const size_t add = view.ByteSizeLong();
    if (taken > 0 && bytes + add > kMaxListResponseBytes) break;
    bytes += add;
    *response.add_jobs() = std::move(view);
  }
  if (taken < entries.size()) {
    response.set_next_page_token(absl::StrCat(entries[taken - 1]->record.queue_seq()));
  }
  return response;
}

void JobRegistry::AwaitTerminal(const std::string& id, absl::Duration timeout) {
  const absl::Time deadline = absl::Now() + timeout;
  absl::MutexLock lock(&mu_);
  while (!IsTerminal(jobs_[id].record.job().state()) && jobs_[id].trainer) {
    if (changed_.WaitWithDeadline(&mu_, deadline)) break;
  }
}

absl::StatusOr<v1::Job> JobRegistry::Cancel(const std::string& name) {
  std::shared_ptr<Trainer> trainer;
  std::string id;
  {
    absl::MutexLock lock(&mu_);
    auto found = Find(name);
    if (!found.ok()) return found.status();
    Entry& entry = **found;
    v1::Job& job = *entry.record.mutable_job();
    id = JobIdOf(entry.record);
    if (IsTerminal(job.state())) {
      return absl::FailedPreconditionError(absl::StrCat(
          "job ", name, " is already ", StateName(job.state()), ": only QUEUED, RUNNING or "
          "PAUSED jobs can be cancelled"));
    }
    if (!entry.trainer) {  // queued, or starting: it will not run
      job.set_state(v1::CANCELLED);
      job.set_reason("cancelled by request before it ran");
      job.set_end_unix_micros(NowMicros());
      Persist(entry);
      entry.feeds->metrics.Close();
      entry.feeds->amax.Close();
      changed_.SignalAll();
      return View(entry);
    }
    trainer = entry.trainer;
  }
  trainer->RequestCancel();
  AwaitTerminal(id, absl::Seconds(10));
  absl::MutexLock lock(&mu_);
  return View(jobs_[id]);
}

absl::StatusOr<v1::Job> JobRegistry::Pause(const std::string& name) {
  std::shared_ptr<Trainer> trainer;
  v1::Job view;
  {
    absl::MutexLock lock(&mu_);
    auto found = Find(name);
    if (!found.ok()) return found.status();
    Entry& entry = **found;
    v1::Job& job = *entry.record.mutable_job();
    if (job.state() != v1::RUNNING || !entry.trainer) {
      return absl::FailedPreconditionError(absl::StrCat(
          "job ", name, " is ", StateName(job.state()), ": only a RUNNING job can be paused"));
    }
    trainer = entry.trainer;
    job.set_state(v1::PAUSED);
    job.set_reason("paused by request");
    Persist(entry);
    view = View(entry);
  }
  trainer->RequestPause();
  return view;
}

absl::StatusOr<v1::Job> JobRegistry::Resume(const std::string& name) {
  std::shared_ptr<Trainer> trainer;
  v1::Job view;
  {
    absl::MutexLock lock(&mu_);
    auto found = Find(name);
    if (!found.ok()) return found.status();
    Entry& entry = **found;
    v1::Job& job = *entry.record.mutable_job();
    if (job.state() != v1::PAUSED || !entry.trainer) {
      return absl::FailedPreconditionError(absl::StrCat(
          "job ", name, " is ", StateName(job.state()), ": only a PAUSED job can be resumed"));
    }
    trainer = entry.trainer;
    job.set_state(v1::RUNNING);
    job.clear_reason();
    Persist(entry);
    view = View(entry);
  }
  trainer->RequestResume();
  return view;
}

absl::StatusOr<v1::UpdateRecipeResponse> JobRegistry::UpdateRecipe(
    const v1::UpdateRecipeRequest& request) {
  std::shared_ptr<Trainer> trainer;
  std::string id;
  {
    absl::MutexLock lock(&mu_);
    auto found = Find(request.name());
    if (!found.ok()) return found.status();
    Entry& entry = **found;
    const v1::JobState state = entry.record.job().state();
    if ((state != v1::RUNNING && state != v1::PAUSED) || !entry.trainer) {
      return absl::FailedPreconditionError(
          absl::StrCat("job ", request.name(), " is ", StateName(state),
                       ": the recipe changes only on a RUNNING or PAUSED job"));
    }
    trainer = entry.trainer;
    id = JobIdOf(entry.record);
  }
  if (!request.has_recipe()) {
    return absl::InvalidArgumentError("recipe is required (recipe.name: bf16, delayed, current, "
                                      "rowwise, blockwise, mxfp8)");
  }
  auto resolved = ResolveRecipe(request.recipe());
  if (!resolved.ok()) return resolved.status();
  if (absl::Status s = CheckRecipeSupported(request.recipe().name()); !s.ok()) return s;
  const v1::AmaxHandling handling = request.amax_handling() == v1::AMAX_HANDLING_UNSPECIFIED
                                        ? v1::AMAX_KEEP
                                        : request.amax_handling();
  auto ticket = trainer->RequestRecipeChange(request.recipe(), handling, request.checkpoint_first());
  if (!ticket.ok()) return ticket.status();
  v1::UpdateRecipeResponse response;
  response.set_recipe_version(ticket->version);
  response.set_effective_step(ticket->effective_step);
  response.set_amax_handling(handling);
  if (!ticket->checkpoint.empty()) {
    response.set_checkpoint(CheckpointNameFromPath(id, ticket->checkpoint));
  }
  absl::MutexLock lock(&mu_);
  jobs_[id].record.set_recipe_since_step(ticket->effective_step);
  spdlog::info("{}: recipe {} v{} from step {}", JobName(id), request.recipe().name(),
               ticket->version, ticket->effective_step);
  return response;
}

absl::StatusOr<v1::RecipeState> JobRegistry::GetRecipe(const std::string& name) {
  std::shared_ptr<Trainer> trainer;
  v1::RecipeState state;
  {
    absl::MutexLock lock(&mu_);
    auto found = Find(name);
    if (!found.ok()) return found.status();
    const Entry& entry = **found;
    const v1::Job& job = entry.record.job();
    *state.mutable_recipe() = job.recipe();
    state.set_recipe_version(job.recipe_version());
    state.set_since_step(entry.record.recipe_since_step());
    state.set_fp8_layers(job.fp8_layers());
    state.set_total_layers(job.total_layers());
    *state.mutable_fp8_layer_names() = entry.record.fp8_layer_names();
    trainer = entry.trainer;
  }
  if (trainer) {
    const TrainerSnapshot snap = trainer->Snapshot();
    *state.mutable_recipe() = snap.recipe;
    state.set_recipe_version(snap.recipe_version);
    state.set_fp8_layers(snap.fp8_layers);
    state.set_total_layers(snap.total_layers);
    state.clear_fp8_layer_names();
    for (const auto& n : snap.fp8_layer_names) state.add_fp8_layer_names(n);
  }
  return state;
}

absl::StatusOr<v1::Checkpoint> JobRegistry::SaveCheckpoint(const std::string& name) {
  std::shared_ptr<Trainer> trainer;
  std::string id;
  {
    absl::MutexLock lock(&mu_);
    auto found = Find(name);
    if (!found.ok()) return found.status();
    Entry& entry = **found;
    const v1::JobState state = entry.record.job().state();
    if ((state != v1::RUNNING && state != v1::PAUSED) || !entry.trainer) {
      return absl::FailedPreconditionError(absl::StrCat(
          "job ", name, " is ", StateName(state),
          ": checkpoints are saved on request only while it is RUNNING or PAUSED "
          "(ListCheckpoints shows the saved ones)"));
    }
    trainer = entry.trainer;
    id = JobIdOf(entry.record);
  }
  auto path = trainer->RequestCheckpoint();
  if (!path.ok()) return path.status();
  return catalog_.Describe(id, *path);
}

absl::StatusOr<std::vector<v1::Checkpoint>> JobRegistry::ListCheckpoints(const std::string& name) {
  std::string id;
  {
    absl::MutexLock lock(&mu_);
    auto found = Find(name);
    if (!found.ok()) return found.status();
    id = JobIdOf((*found)->record);
  }
  return catalog_.List(id, store_.CheckpointDir(id));
}

absl::StatusOr<std::pair<std::string, std::string>> JobRegistry::CheckpointFile(
    const std::string& name) {
  auto parsed = ParseCheckpointName(name, /*allow_job_only=*/true);
  if (!parsed.ok()) return parsed.status();
  {
    absl::MutexLock lock(&mu_);
    if (!jobs_.count(parsed->job)) {
      return absl::NotFoundError(absl::StrCat("job ", JobName(parsed->job), " not found"));
    }
  }
  auto path = catalog_.Resolve(parsed->job, store_.CheckpointDir(parsed->job), parsed->checkpoint);
  if (!path.ok()) return path.status();
  return std::make_pair(CheckpointNameFromPath(parsed->job, *path), *path);
}

absl::StatusOr<JobRegistry::StreamSource> JobRegistry::Stream(const std::string& name) {
  absl::MutexLock lock(&mu_);
  auto found = Find(name);
  if (!found.ok()) return found.status();
  const std::string id = JobIdOf((*found)->record);
  return StreamSource{id, store_.MetricLogPath(id), store_.AmaxLogPath(id), (*found)->feeds};
}

bool JobRegistry::StreamEnded(const std::string& id) {
  absl::MutexLock lock(&mu_);
  auto it = jobs_.find(id);
  return shutdown_ || it == jobs_.end() || IsTerminal(it->second.record.job().state());
}

v1::ServerInfo JobRegistry::Info() {
  v1::ServerInfo info;
  info.set_version(FP8D_VERSION);
  info.set_engine(device_.engine);
  info.set_device_name(device_.name);
  info.set_compute_capability(device_.compute_capability);
  info.set_device_memory_bytes(device_.memory_bytes);
  for (const auto& r : device_.supported_recipes) info.add_supported_recipes(r);
  for (const auto& r : device_.unsupported_recipes) info.add_unsupported_recipes(r);
  absl::MutexLock lock(&mu_);
  info.set_queued_jobs(QueuedCount());
  if (!running_.empty()) info.set_running_job(JobName(running_));
  return info;
}

}  // namespace fp8d
