// The JSON API behind the live dashboard (server/dashboard/): the daemon, its jobs, and pages of a
// job's metric and amax logs. A page starts at a byte offset of the log (`cursor`, 0 = the
// start) and answers the cursor to continue from, so the page in the browser polls for what is
// new and never fetches a record twice. Every answer is bounded: at most kDashboardJobs jobs,
// kMetricPageRecords metric records or kAmaxPageRecords amax records.
//
//   GET /api/server                       {"version","engine","device","uptime_seconds",
//                                          "queued_jobs","open_streams","running_job"}
//   GET /api/jobs                         {"jobs":[{"id","name","state","reason","step",...}]}
//   GET /api/jobs/ID/metrics?cursor=C     {"cursor","more","steps":[[step,loss,lr,tokens_per_sec,
//                                          mfu,grad_norm,recipe_version,fp8_layers,unix_ms]...],
//                                          "evals":[[step,loss,bits_per_byte]...],
//                                          "events":[{"step","kind","message",...}]}
//   GET /api/jobs/ID/amax?cursor=C&every=K {"cursor","more","tensors":["layer/role",...],
//                                          "records":[{"step","recipe_version","tensor":[i...],
//                                          "amax":[...],"saturated":[...],"underflow":[...]}]}
//     (only steps divisible by K, so a long run's heatmap costs what its columns need)
#pragma once

#include <cstdint>
#include <string>

#include "absl/status/statusor.h"
#include "absl/time/time.h"

namespace fp8d {

class JobRegistry;

inline constexpr int kDashboardJobs = 200;             // the most recently submitted
inline constexpr size_t kMetricPageRecords = 5000;
inline constexpr size_t kAmaxPageRecords = 200;

std::string ServerJson(JobRegistry& registry, int open_streams, absl::Duration uptime);
std::string JobsJson(JobRegistry& registry);
// NOT_FOUND for an unknown job; INVALID_ARGUMENT for a bad cursor or `every`.
absl::StatusOr<std::string> MetricPageJson(JobRegistry& registry, const std::string& job_id,
                                           int64_t cursor);
absl::StatusOr<std::string> AmaxPageJson(JobRegistry& registry, const std::string& job_id,
                                         int64_t cursor, int64_t every);

}  // namespace fp8d
