// The daemon's state dir: one folder per job holding its record, logs and checkpoints.
//
//   STATE/jobs/{job}/job.json          JobRecord as JSON, replaced atomically on every change
//   STATE/jobs/{job}/metrics.log       MetricRecord log (core/metric_log.h)
//   STATE/jobs/{job}/amax.log          AmaxRecord log
//   STATE/jobs/{job}/checkpoints/      step-NNNNNNNN.safetensors written by the trainer
//
// A record is written with temp file + fsync + rename + directory fsync, so after `kill -9` or a
// power cut each job.json is either the old or the new version, never a torn mix.
#pragma once

#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "fp8d/v1/trainer.pb.h"

namespace fp8d {

class JobStore {
 public:
  explicit JobStore(std::string state_dir);

  // Creates STATE/jobs when missing; FAILED_PRECONDITION when it cannot be created or written.
  absl::Status Init();

  std::string JobDir(const std::string& job_id) const;
  std::string CheckpointDir(const std::string& job_id) const;
  std::string MetricLogPath(const std::string& job_id) const;
  std::string AmaxLogPath(const std::string& job_id) const;

  absl::Status Save(const fp8d::v1::JobRecord& record) const;

  // Every readable record, in submission order. A record that fails to parse is reported in
  // `errors` (file and reason) and skipped, so one bad file cannot keep the daemon down.
  std::vector<fp8d::v1::JobRecord> LoadAll(std::vector<std::string>* errors) const;

 private:
  std::string state_dir_;
};

// Writes `contents` to `path` atomically (temp file in the same dir, fsync, rename, dir fsync).
absl::Status WriteFileAtomically(const std::string& path, const std::string& contents);

}  // namespace fp8d
