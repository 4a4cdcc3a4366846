// The daemon's jobs: a FIFO queue with one running job per accelerator, job states and reasons,
// persistence in the state dir, crash recovery, and the commands the API applies to a job.
//
// Threads: a scheduler thread starts queued jobs one at a time and runs each on itself; RPC
// threads call the public methods. `mu_` guards the records and is never held across a
// blocking call (trainer commands that wait for a step boundary, file hashing), so neither the
// training thread nor other RPCs wait behind a slow call.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "core/engine.h"
#include "core/trainer.h"
#include "fp8d/v1/trainer.pb.h"
#include "server/checkpoint_catalog.h"
#include "server/job_store.h"
#include "server/job_telemetry.h"

namespace fp8d {

struct RegistryOptions {
  std::string state_dir;
  std::string data_root;          // job data paths are confined here; empty = no confinement
  std::string engine_choice = "auto";
  int max_queued_jobs = 64;       // QUEUED jobs beyond this are RESOURCE_EXHAUSTED
};

inline constexpr int kDefaultPageSize = 50;
inline constexpr int kMaxPageSize = 500;
inline constexpr size_t kMaxListResponseBytes = 1 << 20;

class JobRegistry {
 public:
  JobRegistry(RegistryOptions options, DeviceInfo device);
  ~JobRegistry();

  // Loads the state dir. A job that was RUNNING or PAUSED when the daemon died is queued to
  // resume from its latest intact checkpoint, or from step 0 when it had none. A job whose
  // record and backup are both damaged is listed as FAILED saying so, and never run.
  absl::Status Load();
  // Starts the scheduler thread.
  void Start();
  // SIGTERM: stops the running job with a checkpoint (it resumes on the next start), ends all
  // streams and joins the scheduler. Idempotent.
  void Shutdown();
  bool shutting_down() const;

  absl::StatusOr<fp8d::v1::Job> Submit(const fp8d::v1::SubmitJobRequest& request);
  absl::StatusOr<fp8d::v1::Job> Get(const std::string& name);
  absl::StatusOr<fp8d::v1::ListJobsResponse> List(int page_size, const std::string& page_token);
  absl::StatusOr<fp8d::v1::Job> Cancel(const std::string& name);
  // Removes a SUCCEEDED, FAILED or CANCELLED job and its directory (server/job_deletion.cc).
  absl::StatusOr<fp8d::v1::DeleteJobResponse> Delete(const std::string& name);
  absl::StatusOr<fp8d::v1::Job> Pause(const std::string& name);
  absl::StatusOr<fp8d::v1::Job> Resume(const std::string& name);
  absl::StatusOr<fp8d::v1::UpdateRecipeResponse> UpdateRecipe(
      const fp8d::v1::UpdateRecipeRequest& request);
  absl::StatusOr<fp8d::v1::RecipeState> GetRecipe(const std::string& name);
  absl::StatusOr<fp8d::v1::Checkpoint> SaveCheckpoint(const std::string& name);
  absl::StatusOr<std::vector<fp8d::v1::Checkpoint>> ListCheckpoints(const std::string& name);
  // `name`: jobs/{job}/checkpoints/{c} or jobs/{job} (latest). Returns the resource name and path.
  absl::StatusOr<std::pair<std::string, std::string>> CheckpointFile(const std::string& name);
  CheckpointCatalog& catalog() { return catalog_; }

  // What a stream needs to replay and follow a job.
  struct StreamSource {
    std::string job_id;
    std::string metric_log;
    std::string amax_log;
    std::shared_ptr<JobFeeds> feeds;
  };
  absl::StatusOr<StreamSource> Stream(const std::string& name);
  // True when the job will publish no more records (terminal state or daemon stopping).
  bool StreamEnded(const std::string& job_id);

  fp8d::v1::ServerInfo Info();

 private:
  struct Entry {
    fp8d::v1::JobRecord record;
    std::shared_ptr<JobFeeds> feeds = std::make_shared<JobFeeds>();
    std::shared_ptr<Trainer> trainer;  // set while the job holds the accelerator
    bool stop_for_shutdown = false;
    bool damaged = false;              // record unreadable: shown, never run or rewritten
  };

  void SchedulerLoop();
  void RunJob(const std::string& job_id);
  // Finishes a job that could not start or ended: state, reason, end time, feeds closed.
  void Finish(const std::string& job_id, fp8d::v1::JobState state, const std::string& reason);
  void OnMetric(const std::string& job_id, const fp8d::v1::MetricRecord& record);
  void Persist(const Entry& entry) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  absl::StatusOr<Entry*> Find(const std::string& name) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  fp8d::v1::Job View(const Entry& entry) const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  absl::Status ValidateSpec(fp8d::v1::JobSpec* spec) const;
  absl::Status CheckRecipeSupported(const std::string& recipe_name) const;
  int QueuedCount() const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Waits (bounded) for a job to leave RUNNING/PAUSED after a cancel, so the reply shows it.
  void AwaitTerminal(const std::string& job_id, absl::Duration timeout);
  // SubmitJobRequest.continue_from checked against the new job's resolved spec: the
  // checkpoint's resource name (server/job_continuation.cc).
  absl::StatusOr<std::string> ResolveContinueFrom(const std::string& continue_from,
                                                  const fp8d::v1::JobSpec& spec);
  // Before a continued job first runs: its starting checkpoint becomes its own (a hard link in
  // its checkpoint dir), so it resumes from there now and after any restart.
  absl::Status AdoptContinuedCheckpoint(const std::string& job_id);
  // Folders of deletions that a crash interrupted (server/job_deletion.cc).
  void RemoveDeletedJobDirs();

  const RegistryOptions options_;
  const DeviceInfo device_;
  JobStore store_;
  CheckpointCatalog catalog_;

  mutable absl::Mutex mu_;
  absl::CondVar changed_;
  std::map<std::string, Entry> jobs_ ABSL_GUARDED_BY(mu_);
  std::map<std::string, std::string> by_request_id_ ABSL_GUARDED_BY(mu_);
  int64_t next_seq_ ABSL_GUARDED_BY(mu_) = 1;
  std::string running_ ABSL_GUARDED_BY(mu_);
  bool shutdown_ ABSL_GUARDED_BY(mu_) = false;
  std::thread scheduler_;
};

}  // namespace fp8d
