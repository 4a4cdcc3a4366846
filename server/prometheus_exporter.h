// /metrics: the daemon, its jobs and the FP8 tensors of the job in training, in the Prometheus text
// format through prometheus-cpp (its MetricFamily model and TextSerializer). Values are read at
// scrape time from the job registry and from the tails of the jobs' metric and amax logs, so a
// scrape shows what the logs hold; the series are listed in README.md.
//
// Label cardinality is bounded:
//   job_id        the RUNNING or PAUSED job and the kExportedEndedJobs jobs that ended last
//   layer, role   only for the RUNNING or PAUSED job while it trains in FP8, at most
//                 kMaxExportedTensors tensors: the model's Linear layers (layers.N.attn.qkv, ...,
//                 lm_head) and input, weight or grad_output
//   state         the six job states
#pragma once

#include <functional>
#include <map>
#include <string>
#include <vector>

#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "prometheus/collectable.h"
#include "prometheus/metric_family.h"
#include "server/job_log_tail.h"

namespace fp8d {

class JobRegistry;

inline constexpr int kExportedEndedJobs = 8;
inline constexpr int kMaxExportedTensors = 2048;

class PrometheusExporter : public prometheus::Collectable {
 public:
  // `open_streams` reports the gRPC streams open right now.
  PrometheusExporter(JobRegistry* registry, std::function<int()> open_streams);

  std::vector<prometheus::MetricFamily> Collect() const override;
  // Collect() in the text exposition format (version 0.0.4).
  std::string Scrape() const;

 private:
  JobRegistry* const registry_;
  const std::function<int()> open_streams_;
  const absl::Time start_;
  mutable absl::Mutex mu_;  // one scrape reads the logs at a time
  mutable std::map<std::string, JobLogTail> tails_ ABSL_GUARDED_BY(mu_);  // by job name
};

}  // namespace fp8d
