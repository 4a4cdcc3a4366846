// The newest records of one job's metric and amax logs, read incrementally: every Update reads
// only what was appended since the previous one (the logs are append-only, so a byte offset stays
// valid), which keeps a Prometheus scrape of a long job cheap.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "fp8d/v1/telemetry.pb.h"
#include "fp8d/v1/trainer.pb.h"

namespace fp8d {

class JobRegistry;

class JobLogTail {
 public:
  // Reads what was appended to `metric_log` and, when `read_amax`, to `amax_log`. A log that does
  // not exist yet (a queued job) is no error: there is nothing to show.
  void Update(const std::string& metric_log, const std::string& amax_log, bool read_amax);

  const std::optional<fp8d::v1::StepMetrics>& step() const { return step_; }
  const std::optional<fp8d::v1::EvalMetrics>& eval() const { return eval_; }
  const std::optional<fp8d::v1::AmaxRecord>& amax() const { return amax_; }

 private:
  int64_t metric_offset_ = 0;
  int64_t amax_offset_ = 0;
  std::optional<fp8d::v1::StepMetrics> step_;
  std::optional<fp8d::v1::EvalMetrics> eval_;
  std::optional<fp8d::v1::AmaxRecord> amax_;
};

// Every job of the registry in submission order (all pages of List).
std::vector<fp8d::v1::Job> ListEveryJob(JobRegistry& registry);

}  // namespace fp8d
