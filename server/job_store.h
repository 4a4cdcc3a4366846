// The daemon's state dir: one folder per job holding its record, logs and checkpoints.
//
//   STATE/jobs/{job}/job.json          JobRecord as JSON, replaced atomically on every change
//   STATE/jobs/{job}/job.backup.json   the same record, written after job.json: a second copy
//   STATE/jobs/{job}/metrics.log       MetricRecord log (core/metric_log.h)
//   STATE/jobs/{job}/amax.log          AmaxRecord log
//   STATE/jobs/{job}/checkpoints/      step-NNNNNNNN.safetensors written by the trainer
//
// A record is written with temp file + fsync + rename + directory fsync, so after `kill -9` or a
// power cut each job.json is either the old or the new version, never a torn mix; when it is
// damaged later (bit rot, a bad edit) the backup copy restores it. Everything is private to the
// daemon's user: directories 0700, files 0600.
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

  // Creates STATE/jobs when missing and makes STATE and STATE/jobs private (0700);
  // FAILED_PRECONDITION when they cannot be created or written.
  absl::Status Init();

  std::string JobDir(const std::string& job_id) const;
  std::string CheckpointDir(const std::string& job_id) const;
  std::string MetricLogPath(const std::string& job_id) const;
  std::string AmaxLogPath(const std::string& job_id) const;

  absl::Status Save(const fp8d::v1::JobRecord& record) const;

  struct Loaded {
    std::vector<fp8d::v1::JobRecord> records;  // in submission order
    // Jobs whose job.json was damaged but whose backup copy was intact (restored on disk).
    std::vector<std::string> restored;         // "id: why job.json was unreadable"
    // Job folders with neither copy readable: {id, why}. Their files are left untouched.
    std::vector<std::pair<std::string, std::string>> damaged;
  };
  // Every job folder's record. One bad file cannot keep the daemon down or hide its job.
  Loaded LoadAll() const;

 private:
  std::string state_dir_;
};

inline constexpr char kJobRecordFile[] = "job.json";
inline constexpr char kJobRecordBackupFile[] = "job.backup.json";

// Writes `contents` to `path` atomically (temp file in the same dir, fsync, rename, dir fsync),
// readable and writable by its owner only.
absl::Status WriteFileAtomically(const std::string& path, const std::string& contents);

}  // namespace fp8d
