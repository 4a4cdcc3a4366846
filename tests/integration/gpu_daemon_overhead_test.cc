// What 8 streaming clients cost the training rate of `fp8d --engine cuda` (DESIGN.md's target:
// daemon overhead < 1% throughput with 8 clients streaming metrics and amax). One daemon runs
// the same 124m-shaped delayed-scaling job on real text (the file named by FP8D_PARITY_TEXT)
// three times, one after the other:
//   alone-1  nobody follows it; the test reads its metric log once it has ended
//   watched  8 clients, each its own connection, each following both StreamMetrics and
//            StreamAmax (follow=true) from the job's submission until it ends
//   alone-2  as alone-1
// and prints, per run, wall-clock steps/s between the step records after a warm-up, the median
// step time, tokens/s and what each follower received. It asserts that every job succeeded, that
// every follower received every step record exactly once and the amax record of every FP8 step,
// and that the watched rate is at least kMinRateRatio of the alone rate.
//
// Needs a GPU and the text: without FP8D_PARITY_TEXT, without an NVIDIA device, or with an fp8d
// built without CUDA, the test says SKIPPED and why. The same runs and checks, bar the rate
// bound, run on the CPU engine with the tiny preset (DaemonOverheadOnCpuTest) on any machine.
// From the GPU bundle it runs as
//   FP8D_BIN_DIR=bundle/bin FP8D_PARITY_TEXT=bundle/data/text.txt \
//     bundle/bin/fp8d_integration_tests --gtest_filter='GpuDaemonOverhead*'
#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <map>
#include <memory>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/notification.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "gtest/gtest.h"
#include "tests/integration/daemon_harness.h"

namespace fp8d::itest {
namespace {

namespace v1 = fp8d::v1;

// DESIGN.md's "8 clients streaming metrics and amax": 8 connections, each following both streams.
constexpr int kClients = 8;
// Steps left out of the rate: engine warm-up (cuBLASLt and cuDNN plan choices, first-touch
// allocations) makes the first steps of every job slower than the rest.
constexpr int kWarmupSteps = 10;
constexpr int kEvalBatches = 2;
// How long the followers of a cancelled job may take to end before the daemon is killed.
constexpr absl::Duration kStreamGrace = absl::Seconds(30);

struct OverheadPlan {
  std::string model;           // the job file's model section, indented
  std::string train;           // data.train, relative to the daemon's data root
  std::string policy;          // the recipe's policy section, indented; empty = the default
  std::string lr;
  int steps = 0;
  int batch = 0;
  int seq_len = 0;
  // Watched steps/s >= this x alone steps/s; 0 = printed only.
  double min_rate_ratio = 0.0;
  absl::Duration timeout;      // per job: it is cancelled (and the test fails) past this
  std::string what;            // for the printed table
};

std::string JobText(const OverheadPlan& plan, const std::string& name) {
  return absl::StrCat("name: ", name, "\n",
                      "model:\n", plan.model,
                      "data:\n  train: ", plan.train, "\n",
                      "optimizer:\n  lr: ", plan.lr, "\n  warmup_steps: 16\n",
                      "steps: ", plan.steps, "\n",
                      "batch_size: ", plan.batch, "\n",
                      "seq_len: ", plan.seq_len, "\n",
                      "log_interval: 1\n",
                      "eval_batches: ", kEvalBatches, "\n",
                      "recipe:\n  name: delayed\n", plan.policy);
}

// What one client's two follower threads received. Each field is written by one thread only
// and read after both have been joined.
struct FollowerSeen {
  absl::Status metrics_status;
  absl::Status amax_status;
  int64_t metric_records = 0;            // steps, evals and events
  std::map<int64_t, int> step_records;   // step -> times received
  std::set<int64_t> fp8_steps;           // steps whose record reports FP8 layers
  int64_t amax_records = 0;
  int64_t amax_bytes = 0;
  std::set<int64_t> amax_steps;          // steps with an amax record of at least one tensor
};

// Bounds one job: past `timeout` it cancels the job, which ends its streams; if they have not
// ended kStreamGrace later, it kills the daemon, which ends them all. Finish() (or destruction)
// stops it once the job and its followers are done.
class JobWatchdog {
 public:
  JobWatchdog(Daemon& daemon, const std::string& job, absl::Duration timeout)
      : thread_([this, &daemon, job, timeout] {
          if (done_.WaitForNotificationWithTimeout(timeout)) return;
          const absl::StatusOr<v1::Job> cancelled = daemon.Client()->CancelJob(job);
          ADD_FAILURE() << job << " did not finish within " << timeout
                        << " with its followers; cancelled it: " << cancelled.status();
          if (done_.WaitForNotificationWithTimeout(kStreamGrace)) return;
          ADD_FAILURE() << job << ": streams still open " << kStreamGrace
                        << " after the cancel; killing fp8d\n" << daemon.log();
          daemon.Kill9();
        }) {}
  ~JobWatchdog() { Finish(); }
  void Finish() {
    if (!done_.HasBeenNotified()) done_.Notify();
    if (thread_.joinable()) thread_.join();
  }

 private:
  absl::Notification done_;
  std::thread thread_;
};

struct RunResult {
  std::string label;
  std::string job;
  v1::Job last;                          // the job once it ended
  std::vector<FollowerSeen> followers;   // empty for a run nobody followed
  JobThroughput rate;
};

// Submits the plan's job and waits for its end; with `followers`, kClients clients follow its
// metrics and amax from submission to end.
RunResult RunJob(Daemon& daemon, const OverheadPlan& plan, const std::string& label,
                 bool followers) {
  RunResult result;
  result.label = label;
  auto client = daemon.Client();
  const absl::StatusOr<v1::Job> job =
      client->SubmitJobText(JobText(plan, absl::StrCat("overhead-", label)), {});
  EXPECT_TRUE(job.ok()) << label << ": " << job.status();
  if (!job.ok()) return result;
  result.job = job->name();

  JobWatchdog watchdog(daemon, result.job, plan.timeout);
  if (followers) result.followers.resize(kClients);
  {
    // Each client is its own connection; its two streams run on two threads.
    std::vector<std::unique_ptr<client::TrainerClient>> clients;
    std::vector<std::jthread> threads;
    for (int i = 0; i < static_cast<int>(result.followers.size()); ++i) {
      clients.push_back(daemon.Client());
      client::TrainerClient* c = clients.back().get();
      FollowerSeen* seen = &result.followers[i];
      threads.emplace_back([c, seen, name = result.job] {
        v1::StreamMetricsRequest request;
        request.set_name(name);
        request.set_follow(true);
        seen->metrics_status = c->StreamMetrics(request, [seen](const v1::MetricRecord& r) {
          ++seen->metric_records;
          if (r.has_step()) {
            ++seen->step_records[r.step().step()];
            if (r.step().fp8_layers() > 0) seen->fp8_steps.insert(r.step().step());
          }
          return true;
        });
      });
      threads.emplace_back([c, seen, name = result.job] {
        v1::StreamAmaxRequest request;
        request.set_name(name);
        request.set_follow(true);
        seen->amax_status = c->StreamAmax(request, [seen](const v1::AmaxRecord& r) {
          ++seen->amax_records;
          seen->amax_bytes += static_cast<int64_t>(r.ByteSizeLong());
          if (r.tensors_size() > 0) seen->amax_steps.insert(r.step());
          return true;
        });
      });
    }
    // Longer than the watchdog's bounds, so a hung job is cancelled (and reported) first.
    const bool ended = WaitForJob(
        *client, result.job,
        [](const v1::Job& j) {
          return j.state() == v1::SUCCEEDED || j.state() == v1::FAILED ||
                 j.state() == v1::CANCELLED;
        },
        plan.timeout + 2 * kStreamGrace, &result.last);
    EXPECT_TRUE(ended) << label << " (" << result.job << ") did not end: state "
                       << v1::JobState_Name(result.last.state());
    // Leaving this scope joins the followers: their streams end with the job.
  }
  watchdog.Finish();
  EXPECT_EQ(result.last.state(), v1::SUCCEEDED)
      << label << " (" << result.job << "): " << result.last.reason() << "\n" << daemon.log();
  result.rate = ReadJobThroughput(*client, result.job, kWarmupSteps + 1);
  return result;
}

// Checks one watched run's followers: every step record exactly once, an amax record for every
// step whose record reports FP8 layers.
void CheckFollowers(const RunResult& run, int steps) {
  for (size_t i = 0; i < run.followers.size(); ++i) {
    const FollowerSeen& f = run.followers[i];
    EXPECT_TRUE(f.metrics_status.ok())
        << "follower " << i << " StreamMetrics: " << f.metrics_status;
    EXPECT_TRUE(f.amax_status.ok()) << "follower " << i << " StreamAmax: " << f.amax_status;
    int missing = 0, repeated = 0;
    for (int s = 1; s <= steps; ++s) {
      const auto it = f.step_records.find(s);
      if (it == f.step_records.end()) {
        ++missing;
      } else if (it->second > 1) {
        ++repeated;
      }
    }
    EXPECT_EQ(missing, 0) << "follower " << i << " missed step records of " << steps << " steps";
    EXPECT_EQ(repeated, 0) << "follower " << i << " received some step records more than once";
    EXPECT_EQ(static_cast<int>(f.step_records.size()), steps)
        << "follower " << i << " received records of steps outside 1.." << steps;
    std::vector<int64_t> no_amax;
    for (int64_t s : f.fp8_steps) {
      if (!f.amax_steps.count(s)) no_amax.push_back(s);
    }
    if (!no_amax.empty()) {
      ADD_FAILURE() << "follower " << i << ": no amax record for " << no_amax.size() << " of its "
                    << f.fp8_steps.size() << " FP8 steps, the first " << no_amax.front();
    }
  }
}

// Runs alone, watched, alone again and checks what the top of this file says.
void MeasureOverhead(Daemon& daemon, const OverheadPlan& plan) {
  // The baseline is the mean of the runs on either side of the watched one: a drift over the
  // three jobs (GPU clocks and temperature settling, page cache warming) then moves the
  // baseline as much as the watched run. The best of the two would bias the ratio down.
  std::vector<RunResult> runs;
  runs.push_back(RunJob(daemon, plan, "alone-1", false));
  runs.push_back(RunJob(daemon, plan, "watched", true));
  runs.push_back(RunJob(daemon, plan, "alone-2", false));
  for (const RunResult& run : runs) {
    ASSERT_EQ(run.last.state(), v1::SUCCEEDED) << run.label << " did not succeed";
    EXPECT_EQ(run.rate.step_records, plan.steps) << run.label << ": step records in the log";
    ASSERT_GT(run.rate.steps_per_sec, 0) << run.label << ": no rate from the metric log";
  }
  const RunResult& watched = runs[1];
  // Delayed scaling with these shapes runs FP8 layers on every step; without them the amax
  // streams would carry nothing and the check below would pass without checking anything.
  ASSERT_EQ(watched.rate.fp8_steps, plan.steps) << "steps with FP8 layers in the watched job";
  CheckFollowers(watched, plan.steps);

  const double tokens_per_step = static_cast<double>(plan.batch) * plan.seq_len;
  std::printf("daemon overhead, %s: %d steps (rate over steps %d..%d), %d clients each "
              "following StreamMetrics and StreamAmax in the watched run\n",
              plan.what.c_str(), plan.steps, kWarmupSteps + 1, plan.steps, kClients);
  std::printf("%-8s %9s %10s %12s %18s %16s\n", "run", "steps/s", "median_ms", "tokens/s",
              "metric_recs/client", "amax_recs/client");
  for (const RunResult& run : runs) {
    std::string metric = "-", amax = "-";
    if (!run.followers.empty()) {
      int64_t min_m = INT64_MAX, max_m = 0, min_a = INT64_MAX, max_a = 0;
      for (const FollowerSeen& f : run.followers) {
        min_m = std::min(min_m, f.metric_records);
        max_m = std::max(max_m, f.metric_records);
        min_a = std::min(min_a, f.amax_records);
        max_a = std::max(max_a, f.amax_records);
      }
      metric = absl::StrCat(min_m, "..", max_m);
      amax = absl::StrCat(min_a, "..", max_a);
    }
    std::printf("%-8s %9.3f %10.3f %12.0f %18s %16s\n", run.label.c_str(),
                run.rate.steps_per_sec, run.rate.median_step_ms,
                tokens_per_step * run.rate.steps_per_sec, metric.c_str(), amax.c_str());
  }
  const double alone_rate = (runs[0].rate.steps_per_sec + runs[2].rate.steps_per_sec) / 2;
  const double alone_ms = (runs[0].rate.median_step_ms + runs[2].rate.median_step_ms) / 2;
  const double rate_ratio = watched.rate.steps_per_sec / alone_rate;
  int64_t amax_bytes = 0;
  for (const FollowerSeen& f : watched.followers) amax_bytes += f.amax_bytes;
  std::printf("watched / mean(alone-1, alone-2): steps/s %.4f (overhead %+.2f%%), median step "
              "time %.4f; the followers took %.1f MB of amax records\n",
              rate_ratio, 100.0 * (1.0 - rate_ratio), watched.rate.median_step_ms / alone_ms,
              amax_bytes / 1e6);
  std::fflush(stdout);
  ::testing::Test::RecordProperty("steps_per_sec_alone", std::to_string(alone_rate));
  ::testing::Test::RecordProperty("steps_per_sec_watched",
                                  std::to_string(watched.rate.steps_per_sec));
  if (plan.min_rate_ratio > 0) {
    EXPECT_GE(rate_ratio, plan.min_rate_ratio)
        << kClients << " clients following metrics and amax slowed training: "
        << watched.rate.steps_per_sec << " steps/s against " << alone_rate << " alone";
  }
}

// The GPU run: 124m widths with the byte-level vocabulary, 120 steps of 16 x 1024 tokens of
// real text under delayed scaling with the default policy (at 16384 tokens the automatic size
// rule makes the 12 gate/up projections FP8 and keeps the other GEMMs BF16).
TEST(GpuDaemonOverheadTest, EightClientsFollowingMetricsAndAmaxKeepTheStepRateOn124m) {
  CudaDaemonOnText run = StartCudaDaemonOnText("gpu-overhead");
  if (!run.skip.empty()) GTEST_SKIP() << run.skip;
  ASSERT_TRUE(run.status.ok()) << run.status << "\n" << (run.daemon ? run.daemon->log() : "");
  Daemon& daemon = *run.daemon;
  absl::StatusOr<v1::ServerInfo> info = daemon.Client()->GetServerInfo();
  ASSERT_TRUE(info.ok()) << info.status();

  OverheadPlan plan;
  plan.model = "  preset: 124m\n  vocab_size: 256\n";
  plan.train = run.text_file;
  plan.lr = "6.0e-4";
  plan.steps = 120;
  plan.batch = 16;
  plan.seq_len = 1024;
  // A guard against a daemon that blocks training on its clients, with room for the noise of
  // a ~3 s measurement. DESIGN.md's 1% target is judged from the printed ratio, not asserted:
  // GPU clocks and host scheduling move single runs this short by about that much. Measured on
  // an H100 80GB HBM3, three repetitions: 0.9988, 0.9984 and 1.0013 (24.3 ms a step, 39 steps/s
  // alone and watched).
  plan.min_rate_ratio = 0.97;
  // About 7 s a job on an H100: engine start, 120 steps of ~25 ms, eval, a 1 GB checkpoint.
  plan.timeout = absl::Minutes(3);
  plan.what = absl::StrCat("cuda on ", info->device_name(), ", 124m-shaped delayed, ", plan.batch,
                           "x", plan.seq_len, " tokens of ", (daemon.data_root() + "/" + run.text_file));
  MeasureOverhead(daemon, plan);
  EXPECT_EQ(daemon.Terminate(), 0) << daemon.log();
}

// The same runs and follower checks with the CPU engine and the tiny preset, so the machinery
// runs with the other integration tests on any machine. The rate is printed, not bounded: on a
// small shared machine 16 follower threads compete with training for the cores, and
// DaemonWatchers bounds the CPU rate with a best-of-two comparison made for that.
TEST(DaemonOverheadOnCpuTest, EightClientsFollowingMetricsAndAmaxReceiveEveryRecordOnTiny) {
  DaemonFixture f = StartDaemonWithCorpus("cpu-overhead");
  ASSERT_TRUE(f.daemon->running());
  OverheadPlan plan;
  plan.model = "  preset: tiny\n";
  plan.train = "corpus.txt";
  // Every layer but the LM head FP8, so the amax streams carry tensors (the automatic size
  // rule keeps the tiny preset's layers BF16).
  plan.policy = "  policy:\n    min_gemm_dim: 16\n";
  plan.lr = "3.0e-3";
  plan.steps = 40;
  plan.batch = 4;
  plan.seq_len = 64;
  plan.timeout = absl::Minutes(2);
  plan.what = "cpu, tiny delayed, 4x64 tokens of the harness's corpus";
  MeasureOverhead(*f.daemon, plan);
}

}  // namespace
}  // namespace fp8d::itest
