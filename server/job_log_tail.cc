#include "server/job_log_tail.h"

#include "core/metric_log.h"
#include "server/job_registry.h"

namespace fp8d {
namespace {

// Records parsed per read: the memory one Update holds at a time.
constexpr size_t kTailPageRecords = 4096;

}  // namespace

void JobLogTail::Update(const std::string& metric_log, const std::string& amax_log,
                        bool read_amax) {
  while (true) {
    auto read = ReadMetricLog(metric_log, 0, 0, metric_offset_, kTailPageRecords);
    if (!read.ok()) break;
    for (const fp8d::v1::MetricRecord& r : read->records) {
      if (r.has_step()) step_ = r.step();
      if (r.has_eval()) eval_ = r.eval();
    }
    metric_offset_ = read->next_offset;
    if (read->records.size() < kTailPageRecords) break;
  }
  if (!read_amax) return;
  while (true) {
    auto read = ReadAmaxLog(amax_log, 0, amax_offset_, kTailPageRecords);
    if (!read.ok()) break;
    if (!read->records.empty()) amax_ = std::move(read->records.back());
    amax_offset_ = read->next_offset;
    if (read->records.size() < kTailPageRecords) break;
  }
}

std::vector<fp8d::v1::Job> ListEveryJob(JobRegistry& registry) {
  std::vector<fp8d::v1::Job> jobs;
  std::string token;
  do {
    auto page = registry.List(kMaxPageSize, token);
    if (!page.ok()) break;
    for (auto& j : *page->mutable_jobs()) jobs.push_back(std::move(j));
    token = page->next_page_token();
  } while (!token.empty());
  return jobs;
}

}  // namespace fp8d
