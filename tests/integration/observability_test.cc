// What people watch a run with, against one daemon training the demo job (deploy/jobs/demo.yaml,
// 120 steps, switched from bf16 to delayed FP8 on the way): Debian's real Prometheus server
// scraping /metrics, the dashboard in headless Chromium, the job's TensorBoard event file and
// fp8d-metrics, each compared value by value with the job's metric and amax logs.
#include <algorithm>
#include <cmath>
#include <filesystem>
#include <map>
#include <regex>
#include <set>

#include <httplib.h>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "core/metric_log.h"
#include "google/protobuf/struct.pb.h"
#include "google/protobuf/util/json_util.h"
#include "gtest/gtest.h"
#include "tests/core/tensorboard_event_reader.h"
#include "tests/integration/daemon_harness.h"

namespace fp8d::itest {
namespace {

namespace fs = std::filesystem;
namespace v1 = fp8d::v1;

constexpr char kPrometheus[] = "/usr/bin/prometheus";
constexpr char kChromium[] = "/usr/bin/chromium";
constexpr char kFortunes[] = "/usr/share/games/fortunes";
constexpr int kSteps = 120;
constexpr int kSwitchAfter = 20;   // steps in bf16 before the switch (at least)
constexpr int kSecondPause = 60;   // a pause in FP8, so Prometheus scrapes tensor series for sure
constexpr auto kWait = absl::Seconds(120);

// The job's logs as the daemon wrote them.
struct Logs {
  std::map<int64_t, v1::StepMetrics> steps;
  std::map<int64_t, v1::EvalMetrics> evals;
  std::vector<v1::Event> events;
  std::map<int64_t, v1::AmaxRecord> amax;
};

Logs ReadLogs(const std::string& job_dir) {
  Logs logs;
  auto metrics = ReadMetricLog(job_dir + "/" + kMetricLogFile, 0, 0);
  EXPECT_TRUE(metrics.ok()) << metrics.status();
  if (metrics.ok()) {
    for (const auto& r : metrics->records) {
      if (r.has_step()) logs.steps[r.step().step()] = r.step();
      if (r.has_eval()) logs.evals[r.eval().step()] = r.eval();
      if (r.has_event()) logs.events.push_back(r.event());
    }
  }
  auto amax = ReadAmaxLog(job_dir + "/" + kAmaxLogFile, 0);
  EXPECT_TRUE(amax.ok()) << amax.status();
  if (amax.ok()) {
    for (const auto& r : amax->records) logs.amax[r.step()] = r;
  }
  return logs;
}

std::string RoleName(v1::TensorRole role) {
  std::string name = v1::TensorRole_Name(role);
  std::transform(name.begin(), name.end(), name.begin(), ::tolower);
  return name;
}

// Prometheus' HTTP API: raw samples of a selector over the last hour, per series.
struct Sample {
  int64_t t_ms = 0;
  double value = 0;
};
using SeriesSamples = std::map<std::map<std::string, std::string>, std::vector<Sample>>;

class PrometheusServer {
 public:
  // Starts /usr/bin/prometheus scraping `target` every 500 ms into a fresh storage dir.
  absl::Status Start(const std::string& dir, const std::string& target) {
    port_ = PickFreePort();
    WriteFile(dir + "/prometheus.yml",
              absl::StrCat("global:\n  scrape_interval: 500ms\n  scrape_timeout: 400ms\n"
                           "scrape_configs:\n  - job_name: fp8d\n    static_configs:\n"
                           "      - targets: ['", target, "']\n"));
    process_ = std::make_unique<ChildProcess>(std::vector<std::string>{
        kPrometheus, "--config.file=" + dir + "/prometheus.yml",
        "--storage.tsdb.path=" + dir + "/tsdb",
        absl::StrCat("--web.listen-address=127.0.0.1:", port_), "--log.level=warn"});
    httplib::Client http("127.0.0.1", port_);
    if (!WaitFor(
            [&] {
              auto res = http.Get("/-/ready");
              return res && res->status == 200;
            },
            absl::Seconds(60))) {
      return absl::DeadlineExceededError("prometheus did not become ready:\n" +
                                         process_->output());
    }
    return absl::OkStatus();
  }

  // The `data.result` of /api/v1/query, or an error naming the query.
  absl::StatusOr<google::protobuf::ListValue> Query(const std::string& query) const {
    httplib::Client http("127.0.0.1", port_);
    auto res = http.Get("/api/v1/query", httplib::Params{{"query", query}}, httplib::Headers{});
    if (!res || res->status != 200) {
      return absl::UnavailableError(absl::StrCat("query `", query, "` failed: ",
                                                 res ? res->body : "no answer"));
    }
    google::protobuf::Value root;
    if (!google::protobuf::util::JsonStringToMessage(res->body, &root).ok()) {
      return absl::DataLossError("not JSON: " + res->body);
    }
    return root.struct_value().fields().at("data").struct_value().fields().at("result")
        .list_value();
  }

  // Every raw sample of `selector` in the last hour, by label set (without __name__, job and
  // instance, which Prometheus adds).
  SeriesSamples Samples(const std::string& selector) const {
    SeriesSamples out;
    auto result = Query(selector + "[1h]");
    EXPECT_TRUE(result.ok()) << result.status();
    if (!result.ok()) return out;
    for (const auto& series : result->values()) {
      std::map<std::string, std::string> labels;
      const auto& metric = series.struct_value().fields().at("metric").struct_value();
      for (const auto& [k, v] : metric.fields()) {
        if (k != "__name__" && k != "job" && k != "instance") labels[k] = v.string_value();
      }
      for (const auto& pair : series.struct_value().fields().at("values").list_value().values()) {
        Sample s;
        s.t_ms = std::llround(pair.list_value().values(0).number_value() * 1000);
        EXPECT_TRUE(absl::SimpleAtod(pair.list_value().values(1).string_value(), &s.value));
        out[labels].push_back(s);
      }
    }
    return out;
  }

  // Whether an instant query returns any series.
  bool Has(const std::string& query) const {
    auto result = Query(query);
    return result.ok() && result->values_size() > 0;
  }

  std::string log() const { return process_ ? process_->output() : ""; }

 private:
  int port_ = 0;
  std::unique_ptr<ChildProcess> process_;
};

// One series' samples by timestamp.
std::map<int64_t, double> ByTime(const SeriesSamples& samples,
                                 const std::map<std::string, std::string>& labels) {
  std::map<int64_t, double> out;
  auto it = samples.find(labels);
  if (it == samples.end()) return out;
  for (const Sample& s : it->second) out[s.t_ms] = s.value;
  return out;
}

// One daemon, one Prometheus and one run of the demo job serve every check below (ctest runs each
// test in its own process, so they share the run by being one test).
struct DemoRun {
  std::string root;
  int http_port = 0;
  std::unique_ptr<Daemon> daemon;
  PrometheusServer prometheus;
  std::string job;      // jobs/demo-N
  std::string job_dir;
  Logs logs;
};

// Starts the daemon and Prometheus, runs the demo job with a recipe switch, and waits until
// Prometheus has scraped its end. An error says what did not happen.
std::string RunDemoJob(DemoRun* s) {
  s->root = MakeTempDir("observability");
  s->http_port = PickFreePort();
  s->daemon = std::make_unique<Daemon>(
      s->root + "/state", kFortunes,
      std::vector<std::string>{"--http-listen", absl::StrCat("127.0.0.1:", s->http_port)});
  if (absl::Status st = s->daemon->Start(); !st.ok()) return st.ToString();
  if (!fs::exists(kPrometheus)) {
    return "no /usr/bin/prometheus: install Debian's `prometheus` (deploy/install-deps.sh)";
  }
  fs::create_directories(s->root + "/prometheus");
  if (absl::Status st = s->prometheus.Start(s->root + "/prometheus",
                                            absl::StrCat("127.0.0.1:", s->http_port));
      !st.ok()) {
    return st.ToString();
  }
  auto submit = s->daemon->Fp8ctl({"--json", "submit",
                                   std::string(FP8D_SOURCE_DIR) + "/deploy/jobs/demo.yaml",
                                   "--set", absl::StrCat("steps=", kSteps)});
  v1::Job job;
  if (submit.exit_code != 0 ||
      !google::protobuf::util::JsonStringToMessage(submit.out, &job).ok()) {
    return "submit failed: " + submit.err + submit.out;
  }
  s->job = job.name();
  const std::string id = job.name().substr(5);
  s->job_dir = s->root + "/state/jobs/" + id;
  auto client = s->daemon->Client();
  const std::string selector = absl::StrCat("{job_id=\"", id, "\"}");
  // Pauses after `step` steps until Prometheus answers `scraped`: a scrape in that phase for sure.
  auto pause_after = [&](int step, const std::string& scraped) -> std::string {
    if (!WaitForJob(*client, s->job, [&](const v1::Job& j) { return j.step() >= step; }, kWait)) {
      return absl::StrCat("the job did not reach step ", step);
    }
    if (!client->PauseJob(s->job).ok()) return "pause failed";
    if (!WaitFor([&] { return s->prometheus.Has(scraped); }, absl::Seconds(60))) {
      return absl::StrCat("prometheus never returned `", scraped, "`:\n", s->prometheus.log());
    }
    return "";
  };
  // bf16 for kSwitchAfter steps or more, then delayed FP8.
  if (auto e = pause_after(kSwitchAfter, "fp8d_job_step" + selector); !e.empty()) return e;
  auto set = s->daemon->Fp8ctl({"recipe", "set", s->job, "delayed"});
  if (set.exit_code != 0) return "recipe set failed: " + set.err;
  if (!client->ResumeJob(s->job).ok()) return "resume failed";
  if (auto e = pause_after(kSecondPause, "fp8d_job_amax_step" + selector); !e.empty()) return e;
  if (!client->ResumeJob(s->job).ok()) return "resume failed";
  v1::Job last;
  if (!WaitForJob(*client, s->job, [](const v1::Job& j) { return j.state() == v1::SUCCEEDED; },
                  kWait, &last)) {
    return "the job did not succeed: " + last.DebugString();
  }
  // The state turns SUCCEEDED after the last record is logged, so this scrape read the whole log.
  const std::string ended =
      absl::StrCat("fp8d_job_state{job_id=\"", id, "\",state=\"SUCCEEDED\"} == 1");
  if (!WaitFor([&] { return s->prometheus.Has(ended); }, absl::Seconds(60))) {
    return "prometheus never scraped the job's end";
  }
  s->logs = ReadLogs(s->job_dir);
  return "";
}

// Every scraped sample of the job's series equals the value the log holds for the step the same
// scrape reported; the tensor series are those of the amax record of the step they report.
void CheckPrometheus(const DemoRun& s) {
  const std::string id = s.job.substr(5);
  const std::map<std::string, std::string> job_label = {{"job_id", id}};
  const auto sel = [&](const char* name) { return absl::StrCat(name, "{job_id=\"", id, "\"}"); };
  const auto step = ByTime(s.prometheus.Samples(sel("fp8d_job_step")), job_label);
  const auto loss = ByTime(s.prometheus.Samples(sel("fp8d_job_loss")), job_label);
  const auto lr = ByTime(s.prometheus.Samples(sel("fp8d_job_learning_rate")), job_label);
  const auto grad = ByTime(s.prometheus.Samples(sel("fp8d_job_grad_norm")), job_label);
  const auto rate = ByTime(s.prometheus.Samples(sel("fp8d_job_tokens_per_second")), job_label);
  const auto version = ByTime(s.prometheus.Samples(sel("fp8d_job_recipe_version")), job_label);
  const auto fp8 = ByTime(s.prometheus.Samples(sel("fp8d_job_fp8_layers")), job_label);
  const auto memory = ByTime(s.prometheus.Samples(sel("fp8d_job_memory_bytes")), job_label);
  ASSERT_GE(step.size(), 3u) << "a scrape at each pause and after the end";
  std::set<int> versions;
  for (const auto& [t, value] : step) {
    const int64_t n = static_cast<int64_t>(value);
    ASSERT_TRUE(s.logs.steps.count(n)) << "step " << n << " is not in the metric log";
    const v1::StepMetrics& m = s.logs.steps.at(n);
    SCOPED_TRACE(absl::StrCat("scrape at ", t, " ms, step ", n));
    // Floats are exported as doubles; back in float they are the logged bits.
    EXPECT_EQ(static_cast<float>(loss.at(t)), m.loss());
    EXPECT_EQ(static_cast<float>(lr.at(t)), m.lr());
    EXPECT_EQ(static_cast<float>(grad.at(t)), m.grad_norm());
    EXPECT_NEAR(rate.at(t), m.tokens_per_sec(), 1e-9 * m.tokens_per_sec());
    EXPECT_EQ(version.at(t), m.recipe_version());
    EXPECT_EQ(fp8.at(t), m.fp8_layers());
    EXPECT_EQ(memory.at(t), static_cast<double>(m.memory_bytes()));
    versions.insert(m.recipe_version());
  }
  EXPECT_EQ(static_cast<int>(step.rbegin()->second), kSteps);
  EXPECT_EQ(versions, (std::set<int>{1, 2})) << "scrapes before and after the recipe switch";

  // The last eval, as scraped after the end.
  const auto eval_step = ByTime(s.prometheus.Samples(sel("fp8d_job_eval_step")), job_label);
  const auto eval_loss = ByTime(s.prometheus.Samples(sel("fp8d_job_eval_loss")), job_label);
  ASSERT_FALSE(eval_step.empty());
  for (const auto& [t, value] : eval_step) {
    const int64_t n = static_cast<int64_t>(value);
    ASSERT_TRUE(s.logs.evals.count(n)) << n;
    EXPECT_EQ(static_cast<float>(eval_loss.at(t)), s.logs.evals.at(n).loss());
  }
  EXPECT_EQ(static_cast<int64_t>(eval_step.rbegin()->second), s.logs.evals.rbegin()->first);

  // FP8 tensor series, scraped during the second pause: every tensor of the amax record of the
  // step they report, with its labels.
  const auto amax_step = ByTime(s.prometheus.Samples(sel("fp8d_job_amax_step")), job_label);
  const SeriesSamples amax = s.prometheus.Samples(sel("fp8d_fp8_tensor_amax"));
  const SeriesSamples saturated = s.prometheus.Samples(sel("fp8d_fp8_tensor_saturated_ratio"));
  const SeriesSamples underflow = s.prometheus.Samples(sel("fp8d_fp8_tensor_underflow_ratio"));
  const SeriesSamples scale = s.prometheus.Samples(sel("fp8d_fp8_tensor_scale"));
  ASSERT_FALSE(amax_step.empty());
  int compared = 0;
  for (const auto& [t, value] : amax_step) {
    const int64_t n = static_cast<int64_t>(value);
    ASSERT_TRUE(s.logs.amax.count(n)) << "amax step " << n;
    const v1::AmaxRecord& record = s.logs.amax.at(n);
    ASSERT_GT(record.tensors_size(), 0);
    for (const auto& tensor : record.tensors()) {
      const std::map<std::string, std::string> labels = {
          {"job_id", id}, {"layer", tensor.layer()}, {"role", RoleName(tensor.role())}};
      SCOPED_TRACE(absl::StrCat("step ", n, " ", tensor.layer(), " ", RoleName(tensor.role())));
      ASSERT_TRUE(ByTime(amax, labels).count(t));
      EXPECT_EQ(static_cast<float>(ByTime(amax, labels).at(t)), tensor.amax());
      EXPECT_EQ(static_cast<float>(ByTime(scale, labels).at(t)), tensor.scale());
      EXPECT_EQ(static_cast<float>(ByTime(saturated, labels).at(t)), tensor.frac_saturated());
      EXPECT_EQ(static_cast<float>(ByTime(underflow, labels).at(t)), tensor.frac_underflow());
      ++compared;
    }
    EXPECT_EQ(static_cast<int>(amax.size()), record.tensors_size())
        << "one series per tensor: bounded labels";
  }
  EXPECT_GT(compared, 0);

  // The daemon's own series.
  for (const char* name : {"fp8d_uptime_seconds", "fp8d_queue_length", "fp8d_open_streams",
                           "fp8d_build_info"}) {
    EXPECT_TRUE(s.prometheus.Has(name)) << name;
  }
  EXPECT_TRUE(s.prometheus.Has(absl::StrCat("fp8d_job_state{job_id=\"", id,
                                            "\",state=\"SUCCEEDED\"} == 1")));
}

// Attribute `name` of the element with id `id` in a DOM dump ("" when absent).
std::string Attribute(const std::string& dom, const std::string& id, const std::string& name) {
  std::smatch tag;
  if (!std::regex_search(dom, tag, std::regex("<[a-z]+ [^>]*id=\"" + id + "\"[^>]*>"))) return "";
  std::smatch attr;
  const std::string t = tag.str();
  if (!std::regex_search(t, attr, std::regex(" " + name + "=\"([^\"]*)\""))) return "";
  return attr[1];
}

CommandResult Chromium(const std::string& profile, const std::vector<std::string>& extra) {
  std::vector<std::string> argv = {kChromium,
                                   "--headless",
                                   "--no-sandbox",
                                   "--disable-gpu",
                                   "--disable-quic",
                                   "--no-first-run",
                                   "--disable-background-networking",
                                   "--disable-component-update",
                                   "--disable-sync",
                                   "--user-data-dir=" + profile,
                                   "--enable-logging=stderr",
                                   "--v=0",
                                   "--hide-scrollbars",
                                   "--window-size=1400,1500",
                                   // Time for the page's first complete fetch and drawing.
                                   "--virtual-time-budget=8000"};
  argv.insert(argv.end(), extra.begin(), extra.end());
  return RunProcess(argv, absl::Seconds(90));
}

// The page loads without console messages and draws what the logs hold; a screenshot stays in
// build/tests/output/dashboard.png.
void CheckDashboard(const DemoRun& s) {
  ASSERT_TRUE(fs::exists(kChromium)) << "install Debian's `chromium` (deploy/install-deps.sh)";
  const std::string id = s.job.substr(5);
  const std::string url = absl::StrCat("http://127.0.0.1:", s.http_port, "/#job=", id);
  auto dump = Chromium(MakeTempDir("chromium-profile"), {"--dump-dom", url});
  ASSERT_EQ(dump.exit_code, 0) << dump.err;
  const std::string& dom = dump.out;
  fs::create_directories(FP8D_TEST_OUTPUT_DIR);
  WriteFile(std::string(FP8D_TEST_OUTPUT_DIR) + "/dashboard.html", dom);

  // No console message at all (errors, failed loads, CSP violations), no error on the page.
  for (absl::string_view line : absl::StrSplit(dump.err, '\n')) {
    EXPECT_FALSE(absl::StrContains(line, ":CONSOLE")) << line;
  }
  EXPECT_TRUE(std::regex_search(dom, std::regex("<div id=\"errors\" hidden=\"\"></div>"))) << dom;
  EXPECT_EQ(Attribute(dom, "job", "data-job"), id);
  EXPECT_EQ(Attribute(dom, "job", "data-state"), "done");

  // The loss curve has every step and eval of the log; the recipe switch is marked at its step.
  EXPECT_EQ(Attribute(dom, "loss-chart", "data-points"), std::to_string(s.logs.steps.size()));
  EXPECT_EQ(Attribute(dom, "loss-chart", "data-eval-points"), std::to_string(s.logs.evals.size()));
  EXPECT_EQ(Attribute(dom, "loss-chart", "data-last-step"), std::to_string(kSteps));
  int64_t switch_step = -1;
  for (const v1::Event& e : s.logs.events) {
    if (e.kind() == "recipe_changed") switch_step = e.step();
  }
  ASSERT_GE(switch_step, kSwitchAfter);
  const size_t chart = dom.find("<svg id=\"loss-chart\"");
  ASSERT_NE(chart, std::string::npos);
  const std::string loss_svg = dom.substr(chart, dom.find("</svg>", chart) - chart);
  const std::regex marker(absl::StrCat(
      "<g class=\"marker recipe_changed\" data-kind=\"recipe_changed\" data-step=\"",
      switch_step, "\"><line[^>]*></line><text[^>]*>delayed v2</text>"));
  EXPECT_TRUE(std::regex_search(loss_svg, marker))
      << "no `delayed v2` marker at step " << switch_step << " in " << loss_svg;

  // The heatmap has a row per FP8 tensor and a column per amax record of the log.
  std::set<std::string> tensors;
  for (const auto& [step, record] : s.logs.amax) {
    for (const auto& t : record.tensors()) tensors.insert(t.layer() + "/" + RoleName(t.role()));
  }
  ASSERT_FALSE(s.logs.amax.empty());
  EXPECT_EQ(Attribute(dom, "heatmap", "data-rows"), std::to_string(tensors.size()));
  EXPECT_EQ(Attribute(dom, "heatmap", "data-columns"), std::to_string(s.logs.amax.size()));
  EXPECT_EQ(Attribute(dom, "heatmap", "data-first-step"),
            std::to_string(s.logs.amax.begin()->first));
  EXPECT_EQ(Attribute(dom, "heatmap", "data-last-step"), std::to_string(kSteps));
  EXPECT_EQ(s.logs.amax.begin()->first, switch_step + 1) << "FP8 from the step after the switch";

  // A screenshot for people to look at.
  const std::string png = std::string(FP8D_TEST_OUTPUT_DIR) + "/dashboard.png";
  fs::remove(png);
  auto shot = Chromium(MakeTempDir("chromium-profile"), {"--screenshot=" + png, url});
  ASSERT_EQ(shot.exit_code, 0) << shot.err;
  const std::string bytes = ReadFile(png);
  ASSERT_GT(bytes.size(), 20000u) << png;
  EXPECT_EQ(bytes.substr(1, 3), "PNG");
  std::cout << "dashboard screenshot: " << png << "\n";
}

void CheckTensorBoard(const DemoRun& s) {
  std::map<int64_t, tensorboard_test::DecodedEvent> train, eval, fp8;
  std::vector<std::string> texts;
  for (const auto& e : tensorboard_test::ReadEvents(s.job_dir)) {
    if (e.scalars.count("train/loss")) train[e.step] = e;
    if (e.scalars.count("eval/loss")) eval[e.step] = e;
    for (const auto& [tag, value] : e.scalars) {
      if (absl::StartsWith(tag, "fp8_amax/")) fp8[e.step] = e;
    }
    if (e.texts.count("events")) texts.push_back(e.texts.at("events"));
  }
  ASSERT_EQ(train.size(), s.logs.steps.size());
  for (const auto& [step, m] : s.logs.steps) {
    EXPECT_EQ(train[step].scalars.at("train/loss"), m.loss()) << step;
    EXPECT_EQ(train[step].scalars.at("train/learning_rate"), m.lr()) << step;
    EXPECT_EQ(train[step].scalars.at("recipe/version"), m.recipe_version()) << step;
  }
  ASSERT_EQ(eval.size(), s.logs.evals.size());
  for (const auto& [step, e] : s.logs.evals) {
    EXPECT_EQ(eval[step].scalars.at("eval/loss"), e.loss());
  }
  // 120 steps are fewer than kTensorBoardAmaxPoints: the statistics of every FP8 step.
  ASSERT_EQ(fp8.size(), s.logs.amax.size());
  for (const auto& [step, record] : s.logs.amax) {
    for (const auto& t : record.tensors()) {
      EXPECT_EQ(fp8[step].scalars.at(Fp8TensorTag("fp8_amax", t)), t.amax());
      EXPECT_EQ(fp8[step].scalars.at(Fp8TensorTag("fp8_underflow", t)), t.frac_underflow());
    }
  }
  EXPECT_TRUE(std::any_of(texts.begin(), texts.end(), [](const std::string& t) {
    return absl::StrContains(t, "**recipe_changed**") && absl::StrContains(t, "delayed v2");
  }));
}

void CheckFp8dMetrics(const DemoRun& s) {
  auto csv = RunProcess({BinaryPath("fp8d-metrics"), s.job_dir, "--csv"}, absl::Seconds(60));
  ASSERT_EQ(csv.exit_code, 0) << csv.err;
  std::vector<std::string> lines = absl::StrSplit(csv.out, '\n', absl::SkipEmpty());
  ASSERT_FALSE(lines.empty());
  const std::vector<std::string> header = absl::StrSplit(lines[0], ',');
  const auto column = [&](const std::string& name) {
    return std::find(header.begin(), header.end(), name) - header.begin();
  };
  size_t steps = 0;
  for (size_t i = 1; i < lines.size(); ++i) {
    const std::vector<std::string> f = absl::StrSplit(lines[i], ',');
    if (f[column("kind")] != "step") continue;
    ++steps;
    int64_t step = 0;
    float loss = 0;
    ASSERT_TRUE(absl::SimpleAtoi(f[column("step")], &step)) << lines[i];
    ASSERT_TRUE(absl::SimpleAtof(f[column("loss")], &loss)) << lines[i];
    EXPECT_EQ(loss, s.logs.steps.at(step).loss()) << lines[i];
    EXPECT_EQ(f[column("recipe_name")], s.logs.steps.at(step).recipe_name());
  }
  EXPECT_EQ(steps, s.logs.steps.size());

  auto amax = RunProcess({BinaryPath("fp8d-metrics"), s.job_dir, "--json", "--amax",
                          "--from-step", "100"},
                         absl::Seconds(60));
  ASSERT_EQ(amax.exit_code, 0) << amax.err;
  std::vector<std::string> records = absl::StrSplit(amax.out, '\n', absl::SkipEmpty());
  EXPECT_EQ(records.size(), static_cast<size_t>(kSteps - 100 + 1));
  for (const std::string& line : records) {
    v1::AmaxRecord r;
    ASSERT_TRUE(google::protobuf::util::JsonStringToMessage(line, &r).ok()) << line;
    EXPECT_EQ(r.SerializeAsString(), s.logs.amax.at(r.step()).SerializeAsString());
  }

  auto usage = RunProcess({BinaryPath("fp8d-metrics"), s.job_dir}, absl::Seconds(30));
  EXPECT_EQ(usage.exit_code, 2);
  EXPECT_TRUE(absl::StrContains(usage.err, "--csv or --json")) << usage.err;
}

TEST(Observability, PrometheusDashboardTensorBoardAndFp8dMetricsShowTheDemoJobsLogs) {
  DemoRun s;
  const std::string error = RunDemoJob(&s);
  ASSERT_TRUE(error.empty()) << error;
  {
    SCOPED_TRACE("Prometheus");
    CheckPrometheus(s);
  }
  {
    SCOPED_TRACE("dashboard in Chromium");
    CheckDashboard(s);
  }
  {
    SCOPED_TRACE("TensorBoard event file");
    CheckTensorBoard(s);
  }
  {
    SCOPED_TRACE("fp8d-metrics");
    CheckFp8dMetrics(s);
  }
}

}  // namespace
}  // namespace fp8d::itest
