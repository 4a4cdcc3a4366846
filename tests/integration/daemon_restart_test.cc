// Crash safety and clean shutdown: kill -9 and SIGTERM followed by a restart on the same state
// dir. Finished jobs and checkpoints survive; the interrupted job resumes from its checkpoint.
#include <cstdio>
#include <filesystem>
#include <thread>

#include "gtest/gtest.h"
#include "tests/integration/daemon_harness.h"

namespace fp8d::itest {
namespace {
namespace v1 = fp8d::v1;

std::vector<v1::MetricRecord> ReplayMetrics(client::TrainerClient& client, const std::string& job) {
  std::vector<v1::MetricRecord> records;
  v1::StreamMetricsRequest request;
  request.set_name(job);
  absl::Status s = client.StreamMetrics(request, [&](const v1::MetricRecord& r) {
    records.push_back(r);
    return true;
  });
  EXPECT_TRUE(s.ok()) << s;
  return records;
}

bool HasEvent(const std::vector<v1::MetricRecord>& records, const std::string& kind) {
  for (const auto& r : records) {
    if (r.has_event() && r.event().kind() == kind) return true;
  }
  return false;
}

TEST(DaemonRestart, Kill9ResumesRunningJobFromItsLatestCheckpoint) {
  auto f = StartDaemonWithCorpus("kill9");
  JobFileOptions options;
  options.steps = 60;
  options.checkpoint_interval = 10;
  auto done = f.client->SubmitJobText(JobYaml(options), {"steps=5", "name=done-first"});
  ASSERT_TRUE(done.ok()) << done.status();
  auto job = f.client->SubmitJobText(JobYaml(options), {});
  ASSERT_TRUE(job.ok()) << job.status();
  // A job that finished before the crash, and the interrupted job past its first checkpoint.
  ASSERT_TRUE(WaitForJob(*f.client, done->name(),
                         [](const v1::Job& j) { return j.state() == v1::SUCCEEDED; },
                         absl::Seconds(60)))
      << f.daemon->log();
  ASSERT_TRUE(WaitForJob(*f.client, job->name(),
                         [](const v1::Job& j) { return j.state() == v1::RUNNING && j.step() >= 13; },
                         absl::Seconds(60)))
      << f.daemon->log();
  auto before = f.client->ListCheckpoints(job->name());
  ASSERT_TRUE(before.ok() && !before->empty());
  auto done_checkpoints = f.client->ListCheckpoints(done->name());
  ASSERT_TRUE(done_checkpoints.ok() && !done_checkpoints->empty());

  f.daemon->Kill9();
  ASSERT_TRUE(f.daemon->Start().ok()) << f.daemon->log();
  auto client = f.daemon->Client();

  v1::Job finished;
  ASSERT_TRUE(WaitForJob(*client, job->name(),
                         [](const v1::Job& j) { return j.state() == v1::SUCCEEDED; },
                         absl::Seconds(90), &finished))
      << f.daemon->log();
  EXPECT_EQ(finished.step(), 60);
  auto records = ReplayMetrics(*client, job->name());
  EXPECT_TRUE(HasEvent(records, "resumed_from_checkpoint"));
  EXPECT_TRUE(HasEvent(records, "finished"));
  // Every checkpoint from before the crash is still listed, plus the final one.
  auto after = client->ListCheckpoints(job->name());
  ASSERT_TRUE(after.ok());
  for (const auto& c : *before) {
    bool found = false;
    for (const auto& a : *after) found |= a.name() == c.name() && a.sha256() == c.sha256();
    EXPECT_TRUE(found) << c.name();
  }
  EXPECT_EQ(after->back().step(), 60);
  // The job that had finished is untouched.
  auto done_after = client->GetJob(done->name());
  ASSERT_TRUE(done_after.ok());
  EXPECT_EQ(done_after->state(), v1::SUCCEEDED);
  EXPECT_EQ(client->ListCheckpoints(done->name())->size(), done_checkpoints->size());
}

// Each step's record once, in order, from the job's metric log.
std::vector<int64_t> LoggedSteps(client::TrainerClient& client, const std::string& job) {
  std::vector<int64_t> steps;
  v1::StreamMetricsRequest request;
  request.set_name(job);
  EXPECT_TRUE(client
                  .StreamMetrics(request,
                                 [&](const v1::MetricRecord& r) {
                                   if (r.has_step()) steps.push_back(r.step().step());
                                   return true;
                                 })
                  .ok());
  return steps;
}

TEST(DaemonRestart, Kill9BeforeTheFirstCheckpointRestartsFromStepZero) {
  // Before: the job was FAILED "no checkpoint to resume from ... at step 0" although it was at
  // step 17 and could simply start again; the steps it ran were then logged twice.
  auto f = StartDaemonWithCorpus("kill9-nockpt");
  JobFileOptions options;
  options.steps = 30;
  options.checkpoint_interval = 0;
  auto job = f.client->SubmitJobText(JobYaml(options), {});
  ASSERT_TRUE(job.ok()) << job.status();
  v1::Job seen;
  ASSERT_TRUE(WaitForJob(*f.client, job->name(),
                         [](const v1::Job& j) { return j.state() == v1::RUNNING && j.step() >= 5; },
                         absl::Seconds(60), &seen));
  f.daemon->Kill9();
  ASSERT_TRUE(f.daemon->Start().ok()) << f.daemon->log();
  // The restart names the step the job had reached (from its metric log), not step 0.
  const std::string log = f.daemon->log();
  constexpr char kReason[] =
      "restarting from step 0 after a daemon restart: the daemon stopped at step ";
  const size_t at = log.find(kReason);
  ASSERT_NE(at, std::string::npos) << log;
  int64_t stopped_at = 0;
  ASSERT_EQ(std::sscanf(log.c_str() + at + sizeof(kReason) - 1, "%ld", &stopped_at), 1)
      << log.substr(at, 120);
  EXPECT_GE(stopped_at, seen.step());
  v1::Job done;
  ASSERT_TRUE(WaitForJob(*f.daemon->Client(), job->name(),
                         [](const v1::Job& j) { return j.state() == v1::SUCCEEDED; },
                         absl::Seconds(120), &done))
      << done.DebugString() << f.daemon->log();
  std::vector<int64_t> want(30);
  for (int i = 0; i < 30; ++i) want[i] = i + 1;
  EXPECT_EQ(LoggedSteps(*f.daemon->Client(), job->name()), want) << "every step once";
}

TEST(DaemonRestart, SigtermCheckpointsEndsStreamsAndResumesOnRestart) {
  auto f = StartDaemonWithCorpus("sigterm");
  JobFileOptions options;
  options.steps = 40;
  auto job = f.client->SubmitJobText(JobYaml(options), {});
  ASSERT_TRUE(job.ok()) << job.status();
  ASSERT_TRUE(WaitForJob(*f.client, job->name(),
                         [](const v1::Job& j) { return j.state() == v1::RUNNING && j.step() >= 3; },
                         absl::Seconds(60)));
  // A follower must see its stream end when the daemon stops.
  absl::Status watch_status = absl::UnknownError("not finished");
  std::thread watcher([&] {
    v1::StreamMetricsRequest request;
    request.set_name(job->name());
    request.set_follow(true);
    watch_status = f.daemon->Client()->StreamMetrics(request, [](const v1::MetricRecord&) { return true; });
  });
  absl::SleepFor(absl::Milliseconds(200));
  EXPECT_EQ(f.daemon->Terminate(absl::Seconds(30)), 0) << f.daemon->log();
  watcher.join();  // bounded: the daemon is gone, so the stream has ended one way or another
  EXPECT_TRUE(watch_status.ok()) << watch_status;

  ASSERT_TRUE(f.daemon->Start().ok()) << f.daemon->log();
  auto client = f.daemon->Client();
  auto checkpoints = client->ListCheckpoints(job->name());
  ASSERT_TRUE(checkpoints.ok());
  ASSERT_FALSE(checkpoints->empty()) << "SIGTERM must checkpoint the running job";
  const int64_t stopped_at = checkpoints->front().step();
  EXPECT_GE(stopped_at, 3);
  v1::Job finished;
  ASSERT_TRUE(WaitForJob(*client, job->name(),
                         [](const v1::Job& j) { return j.state() == v1::SUCCEEDED; },
                         absl::Seconds(90), &finished))
      << f.daemon->log();
  EXPECT_EQ(finished.step(), 40);
  auto records = ReplayMetrics(*client, job->name());
  EXPECT_TRUE(HasEvent(records, "resumed_from_checkpoint"));
}

}  // namespace
}  // namespace fp8d::itest
