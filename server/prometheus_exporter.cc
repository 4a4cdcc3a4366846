#include "server/prometheus_exporter.h"

#include <algorithm>
#include <sstream>

#include "absl/strings/ascii.h"
#include "absl/time/clock.h"
#include "prometheus/text_serializer.h"
#include "server/job_registry.h"

#ifndef FP8D_VERSION
#define FP8D_VERSION "dev"
#endif

namespace fp8d {
namespace {

namespace v1 = fp8d::v1;
using prometheus::ClientMetric;
using prometheus::MetricFamily;
using prometheus::MetricType;

bool IsActive(v1::JobState s) { return s == v1::RUNNING || s == v1::PAUSED; }
bool IsEnded(v1::JobState s) { return s == v1::SUCCEEDED || s == v1::FAILED || s == v1::CANCELLED; }

std::string JobId(const v1::Job& job) { return job.name().substr(5); }  // "jobs/"

// Families in the order they are declared, each gathering its samples.
class Families {
 public:
  MetricFamily& Get(const std::string& name, const std::string& help, MetricType type) {
    auto it = index_.find(name);
    if (it != index_.end()) return families_[it->second];
    index_[name] = families_.size();
    families_.push_back(MetricFamily{name, help, type, {}});
    return families_.back();
  }
  void Gauge(const std::string& name, const std::string& help,
             std::vector<ClientMetric::Label> labels, double value) {
    ClientMetric m;
    m.label = std::move(labels);
    m.gauge.value = value;
    Get(name, help, MetricType::Gauge).metric.push_back(std::move(m));
  }
  void Counter(const std::string& name, const std::string& help,
               std::vector<ClientMetric::Label> labels, double value) {
    ClientMetric m;
    m.label = std::move(labels);
    m.counter.value = value;
    Get(name, help, MetricType::Counter).metric.push_back(std::move(m));
  }
  std::vector<MetricFamily> Take() { return std::move(families_); }

 private:
  std::vector<MetricFamily> families_;
  std::map<std::string, size_t> index_;
};

void AddJobSeries(Families& f, const v1::Job& job, const JobLogTail& tail) {
  const std::vector<ClientMetric::Label> id = {{"job_id", JobId(job)}};
  f.Gauge("fp8d_job_state", "1 for the job's current state", 
          {{"job_id", JobId(job)}, {"state", v1::JobState_Name(job.state())}}, 1);
  f.Gauge("fp8d_job_total_steps", "Optimizer steps the job runs", id,
          static_cast<double>(job.total_steps()));
  if (job.start_unix_micros() > 0) {
    f.Gauge("fp8d_job_start_time_seconds", "When the job started, Unix time", id,
            job.start_unix_micros() / 1e6);
  }
  if (tail.step()) {
    const v1::StepMetrics& s = *tail.step();
    f.Gauge("fp8d_job_step", "Optimizer steps completed (of the newest step record)", id,
            static_cast<double>(s.step()));
    f.Gauge("fp8d_job_loss", "Training loss of the newest step", id, s.loss());
    f.Gauge("fp8d_job_learning_rate", "Learning rate of the newest step", id, s.lr());
    f.Gauge("fp8d_job_grad_norm", "Gradient norm before clipping of the newest step", id,
            s.grad_norm());
    f.Gauge("fp8d_job_tokens_per_second", "Training throughput", id, s.tokens_per_sec());
    f.Gauge("fp8d_job_model_tflops", "Model FLOP/s / 1e12", id, s.model_tflops());
    f.Gauge("fp8d_job_mfu_ratio", "Model FLOPs utilization (0 when the peak is unknown)", id,
            s.mfu());
    f.Gauge("fp8d_job_step_time_seconds", "Time of one step", id, s.step_time_ms() / 1e3);
    f.Gauge("fp8d_job_memory_bytes", "Device memory held by the engine (peak)", id,
            static_cast<double>(s.memory_bytes()));
    f.Gauge("fp8d_job_recipe_version", "Version of the active FP8 recipe", id,
            s.recipe_version());
    f.Gauge("fp8d_job_fp8_layers", "GEMM layers running FP8", id, s.fp8_layers());
    f.Gauge("fp8d_job_layers", "GEMM layers of the model", id, s.total_layers());
    f.Counter("fp8d_job_skipped_steps_total", "Steps skipped for a non-finite loss or gradient",
              id, static_cast<double>(s.skipped_steps()));
    f.Counter("fp8d_job_tokens_total", "Training tokens seen", id,
              static_cast<double>(s.tokens_seen()));
  }
  if (tail.eval()) {
    f.Gauge("fp8d_job_eval_loss", "Held-out loss of the newest eval", id, tail.eval()->loss());
    f.Gauge("fp8d_job_eval_step", "Step of the newest eval", id,
            static_cast<double>(tail.eval()->step()));
  }
}

void AddTensorSeries(Families& f, const v1::Job& job, const JobLogTail& tail) {
  // Only while the job trains in FP8: the amax record of step N precedes step N's metric record,
  // so an FP8 job's newest amax step is never behind its newest step; after a switch to bf16 it is.
  if (!tail.amax() || !tail.step() || tail.amax()->step() < tail.step()->step()) return;
  const v1::AmaxRecord& amax = *tail.amax();
  const std::string id = JobId(job);
  f.Gauge("fp8d_job_amax_step", "Step of the FP8 tensor statistics exported", {{"job_id", id}},
          static_cast<double>(amax.step()));
  const int n = std::min(amax.tensors_size(), kMaxExportedTensors);
  for (int i = 0; i < n; ++i) {
    const v1::TensorAmax& t = amax.tensors(i);
    const std::vector<ClientMetric::Label> labels = {
        {"job_id", id}, {"layer", t.layer()},
        {"role", absl::AsciiStrToLower(v1::TensorRole_Name(t.role()))}};
    f.Gauge("fp8d_fp8_tensor_amax", "Absolute maximum of the FP8 tensor this step", labels,
            t.amax());
    f.Gauge("fp8d_fp8_tensor_scale", "Scale in use (per-tensor recipes; 0 for row/block-wise)",
            labels, t.scale());
    f.Gauge("fp8d_fp8_tensor_saturated_ratio", "Fraction of values clipped to +-fp8_max",
            labels, t.frac_saturated());
    f.Gauge("fp8d_fp8_tensor_underflow_ratio", "Fraction of non-zero values flushed to zero",
            labels, t.frac_underflow());
  }
}

}  // namespace

PrometheusExporter::PrometheusExporter(JobRegistry* registry, std::function<int()> open_streams)
    : registry_(registry), open_streams_(std::move(open_streams)), start_(absl::Now()) {}

std::vector<MetricFamily> PrometheusExporter::Collect() const {
  Families f;
  const v1::ServerInfo info = registry_->Info();
  f.Gauge("fp8d_build_info", "1, labelled with the daemon's version, engine and device",
          {{"version", FP8D_VERSION}, {"engine", info.engine()}, {"device", info.device_name()}},
          1);
  f.Gauge("fp8d_uptime_seconds", "Seconds since the daemon started", {},
          absl::ToDoubleSeconds(absl::Now() - start_));
  f.Gauge("fp8d_queue_length", "Jobs waiting in the queue", {}, info.queued_jobs());
  f.Gauge("fp8d_open_streams", "Open StreamMetrics, StreamAmax and PullCheckpoint calls", {},
          open_streams_ ? open_streams_() : 0);

  const std::vector<v1::Job> jobs = ListEveryJob(*registry_);
  std::map<v1::JobState, int> by_state;
  for (int s = v1::QUEUED; s <= v1::CANCELLED; ++s) by_state[static_cast<v1::JobState>(s)] = 0;
  std::vector<const v1::Job*> exported;
  std::vector<const v1::Job*> ended;
  for (const v1::Job& j : jobs) {
    ++by_state[j.state()];
    if (IsActive(j.state())) exported.push_back(&j);
    if (IsEnded(j.state())) ended.push_back(&j);
  }
  for (const auto& [state, count] : by_state) {
    f.Gauge("fp8d_jobs", "Jobs known to the daemon by state",
            {{"state", v1::JobState_Name(state)}}, count);
  }
  std::sort(ended.begin(), ended.end(), [](const v1::Job* a, const v1::Job* b) {
    return a->end_unix_micros() > b->end_unix_micros();
  });
  if (ended.size() > static_cast<size_t>(kExportedEndedJobs)) ended.resize(kExportedEndedJobs);
  exported.insert(exported.end(), ended.begin(), ended.end());

  absl::MutexLock lock(&mu_);
  std::map<std::string, JobLogTail> kept;
  for (const v1::Job* job : exported) {
    auto source = registry_->Stream(job->name());
    if (!source.ok()) continue;  // deleted since the listing
    JobLogTail& tail = kept[job->name()];
    if (auto it = tails_.find(job->name()); it != tails_.end()) tail = std::move(it->second);
    tail.Update(source->metric_log, source->amax_log, IsActive(job->state()));
    AddJobSeries(f, *job, tail);
    if (IsActive(job->state())) AddTensorSeries(f, *job, tail);
  }
  tails_ = std::move(kept);  // jobs no longer exported are forgotten
  return f.Take();
}

std::string PrometheusExporter::Scrape() const {
  std::ostringstream out;
  prometheus::TextSerializer().Serialize(out, Collect());
  return out.str();
}

}  // namespace fp8d
