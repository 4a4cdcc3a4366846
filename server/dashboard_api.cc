#include "server/dashboard_api.h"

#include <map>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "core/metric_log.h"
#include "server/job_log_tail.h"
#include "server/job_registry.h"
#include "server/json_writer.h"
#include "server/resource_names.h"

#ifndef FP8D_VERSION
#define FP8D_VERSION "dev"
#endif

namespace fp8d {
namespace {

namespace v1 = fp8d::v1;

absl::StatusOr<JobRegistry::StreamSource> Source(JobRegistry& registry, const std::string& job_id,
                                                 int64_t cursor) {
  if (!IsValidId(job_id)) {
    return absl::InvalidArgumentError(absl::StrCat("`", job_id, "` is not a job id"));
  }
  if (cursor < 0) {
    return absl::InvalidArgumentError(absl::StrCat("cursor ", cursor, " must be >= 0"));
  }
  return registry.Stream(JobName(job_id));
}

// A log not written yet (a queued job) reads as empty.
template <typename Read>
absl::Status EmptyWhenMissing(Read& read, int64_t cursor) {
  if (read.ok()) return absl::OkStatus();
  if (!absl::IsNotFound(read.status())) return read.status();
  read = typename Read::value_type();
  read->next_offset = cursor;
  return absl::OkStatus();
}

}  // namespace

std::string ServerJson(JobRegistry& registry, int open_streams, absl::Duration uptime) {
  const v1::ServerInfo info = registry.Info();
  JsonWriter w;
  w.BeginObject()
      .Key("version").String(FP8D_VERSION)
      .Key("engine").String(info.engine())
      .Key("device").String(info.device_name())
      .Key("uptime_seconds").Double(absl::ToDoubleSeconds(uptime))
      .Key("queued_jobs").Int(info.queued_jobs())
      .Key("open_streams").Int(open_streams)
      .Key("running_job").String(info.running_job())
      .EndObject();
  return w.str();
}

std::string JobsJson(JobRegistry& registry) {
  std::vector<v1::Job> jobs = ListEveryJob(registry);
  if (jobs.size() > kDashboardJobs) jobs.erase(jobs.begin(), jobs.end() - kDashboardJobs);
  JsonWriter w;
  w.BeginObject().Key("jobs").BeginArray();
  for (const v1::Job& j : jobs) {
    w.BeginObject()
        .Key("id").String(j.name().substr(5))
        .Key("name").String(j.spec().name())
        .Key("state").String(v1::JobState_Name(j.state()))
        .Key("reason").String(j.reason())
        .Key("step").Int(j.step())
        .Key("total_steps").Int(j.total_steps())
        .Key("last_loss").Float(j.last_loss())
        .Key("recipe").String(j.recipe().name())
        .Key("recipe_version").Int(j.recipe_version())
        .Key("fp8_layers").Int(j.fp8_layers())
        .Key("total_layers").Int(j.total_layers())
        .Key("model").String(j.spec().model().preset())
        .Key("engine").String(j.engine())
        .Key("create_unix_micros").Int(j.create_unix_micros())
        .Key("start_unix_micros").Int(j.start_unix_micros())
        .Key("end_unix_micros").Int(j.end_unix_micros())
        .EndObject();
  }
  w.EndArray().EndObject();
  return w.str();
}

absl::StatusOr<std::string> MetricPageJson(JobRegistry& registry, const std::string& job_id,
                                           int64_t cursor) {
  auto source = Source(registry, job_id, cursor);
  if (!source.ok()) return source.status();
  auto read = ReadMetricLog(source->metric_log, 0, 0, cursor, kMetricPageRecords);
  if (absl::Status s = EmptyWhenMissing(read, cursor); !s.ok()) return s;
  JsonWriter w;
  w.BeginObject()
      .Key("cursor").Int(read->next_offset)
      .Key("more").Bool(read->records.size() >= kMetricPageRecords);
  w.Key("steps").BeginArray();
  for (const v1::MetricRecord& r : read->records) {
    if (!r.has_step()) continue;
    const v1::StepMetrics& s = r.step();
    w.BeginArray()
        .Int(s.step()).Float(s.loss()).Float(s.lr()).Double(s.tokens_per_sec()).Double(s.mfu())
        .Float(s.grad_norm()).Int(s.recipe_version()).Int(s.fp8_layers())
        .Int(r.unix_micros() / 1000)
        .EndArray();
  }
  w.EndArray().Key("evals").BeginArray();
  for (const v1::MetricRecord& r : read->records) {
    if (!r.has_eval()) continue;
    w.BeginArray().Int(r.eval().step()).Float(r.eval().loss()).Float(r.eval().bits_per_byte())
        .EndArray();
  }
  w.EndArray().Key("events").BeginArray();
  for (const v1::MetricRecord& r : read->records) {
    if (!r.has_event()) continue;
    const v1::Event& e = r.event();
    w.BeginObject()
        .Key("step").Int(e.step())
        .Key("kind").String(e.kind())
        .Key("message").String(e.message())
        .Key("recipe_version").Int(e.recipe_version())
        .Key("unix_ms").Int(r.unix_micros() / 1000);
    if (e.kind() == "recipe_changed") {
      w.Key("recipe").String(e.recipe().name())
          .Key("amax").String(e.amax_handling() == v1::AMAX_RESET ? "reset" : "kept");
    }
    w.EndObject();
  }
  w.EndArray().EndObject();
  return w.str();
}

absl::StatusOr<std::string> AmaxPageJson(JobRegistry& registry, const std::string& job_id,
                                         int64_t cursor, int64_t every) {
  if (every < 1) {
    return absl::InvalidArgumentError(absl::StrCat("every ", every, " must be >= 1"));
  }
  auto source = Source(registry, job_id, cursor);
  if (!source.ok()) return source.status();
  // Steps not divisible by `every` are skipped while reading and do not count toward the page.
  std::vector<v1::AmaxRecord> records;
  int64_t offset = cursor;
  bool more = false;
  while (true) {
    auto read = ReadAmaxLog(source->amax_log, 0, offset, kAmaxPageRecords);
    if (absl::Status s = EmptyWhenMissing(read, offset); !s.ok()) return s;
    offset = read->next_offset;
    for (v1::AmaxRecord& r : read->records) {
      if (r.step() % every == 0) records.push_back(std::move(r));
    }
    if (read->records.size() < kAmaxPageRecords) break;
    if (records.size() >= kAmaxPageRecords) {
      more = true;
      break;
    }
  }
  std::map<std::string, int> index;
  std::vector<std::string> names;
  for (const v1::AmaxRecord& r : records) {
    for (const v1::TensorAmax& t : r.tensors()) {
      const std::string name =
          absl::StrCat(t.layer(), "/", absl::AsciiStrToLower(v1::TensorRole_Name(t.role())));
      if (index.emplace(name, static_cast<int>(names.size())).second) names.push_back(name);
    }
  }
  JsonWriter w;
  w.BeginObject().Key("cursor").Int(offset).Key("more").Bool(more).Key("tensors").BeginArray();
  for (const std::string& n : names) w.String(n);
  w.EndArray().Key("records").BeginArray();
  for (const v1::AmaxRecord& r : records) {
    w.BeginObject().Key("step").Int(r.step()).Key("recipe_version").Int(r.recipe_version());
    w.Key("tensor").BeginArray();
    for (const v1::TensorAmax& t : r.tensors()) {
      w.Int(index.at(absl::StrCat(t.layer(), "/",
                                  absl::AsciiStrToLower(v1::TensorRole_Name(t.role())))));
    }
    w.EndArray().Key("amax").BeginArray();
    for (const v1::TensorAmax& t : r.tensors()) w.Float(t.amax());
    w.EndArray().Key("saturated").BeginArray();
    for (const v1::TensorAmax& t : r.tensors()) w.Float(t.frac_saturated());
    w.EndArray().Key("underflow").BeginArray();
    for (const v1::TensorAmax& t : r.tensors()) w.Float(t.frac_underflow());
    w.EndArray().EndObject();
  }
  w.EndArray().EndObject();
  return w.str();
}

}  // namespace fp8d
