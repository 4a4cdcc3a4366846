// Fault injection: fp8d is killed with SIGKILL at seeded random moments over one job, half of
// them inside a checkpoint write (the daemon runs with FP8D_CHECKPOINT_WRITE_DELAY_MS, so each
// write pauses between its data and its rename and the test kills while a temp file exists),
// and restarted each time. The job must end SUCCEEDED with bit for bit the final weights,
// optimizer and FP8 state of an uninterrupted run, each step logged once, and no temp files.
// Bounded: at most kKills kills and kBudget of wall time for the faulty run.
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <random>
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "core/checkpoint.h"
#include "gtest/gtest.h"
#include "tests/integration/daemon_harness.h"

namespace fp8d::itest {
namespace {
namespace fs = std::filesystem;
namespace v1 = fp8d::v1;

constexpr int kSteps = 48;
constexpr int kCheckpointInterval = 4;
constexpr int kKills = 8;
constexpr absl::Duration kBudget = absl::Seconds(150);
constexpr uint32_t kSeed = 20261204;

JobFileOptions FaultJob() {
  JobFileOptions options;
  options.name = "fault";
  options.steps = kSteps;
  options.checkpoint_interval = kCheckpointInterval;
  options.recipe = "delayed";  // amax histories and scales must survive the kills too
  return options;
}

std::string CheckpointDir(const Daemon& daemon, const std::string& job) {
  return daemon.state_dir() + "/jobs/" + job.substr(5) + "/checkpoints";
}

bool HasTempFile(const std::string& dir) {
  std::error_code ec;
  for (const auto& e : fs::directory_iterator(dir, ec)) {
    if (absl::StrContains(e.path().filename().string(), ".tmp-")) return true;
  }
  return false;
}

std::string CheckpointFileNameOf(int step) {
  char name[64];
  std::snprintf(name, sizeof(name), "step-%08d.safetensors", step);
  return name;
}

TEST(FaultInjection, KilledAtRandomMomentsEndsWithTheUninterruptedWeights) {
  const std::string root = MakeTempDir("fault");
  fs::create_directories(root + "/data");
  WriteFile(root + "/data/corpus.txt", CorpusText(200000));

  // The uninterrupted run.
  Daemon reference(root + "/ref", root + "/data");
  ASSERT_TRUE(reference.Start().ok()) << reference.log();
  auto ref_job = reference.Client()->SubmitJobText(JobYaml(FaultJob()), {});
  ASSERT_TRUE(ref_job.ok()) << ref_job.status();
  ASSERT_TRUE(WaitForJob(*reference.Client(), ref_job->name(),
                         [](const v1::Job& j) { return j.state() == v1::SUCCEEDED; },
                         absl::Seconds(120)));
  auto want = ReadCheckpoint(CheckpointDir(reference, ref_job->name()) + "/" +
                             CheckpointFileNameOf(kSteps));
  ASSERT_TRUE(want.ok()) << want.status();
  reference.Kill9();

  // The run that is killed again and again.
  Daemon daemon(root + "/faulty", root + "/data");
  daemon.SetEnv({absl::StrCat(kCheckpointWriteDelayVariable, "=150")});
  ASSERT_TRUE(daemon.Start().ok()) << daemon.log();
  auto job = daemon.Client()->SubmitJobText(JobYaml(FaultJob()), {});
  ASSERT_TRUE(job.ok()) << job.status();
  const std::string dir = CheckpointDir(daemon, job->name());
  std::mt19937 rng(kSeed);
  const absl::Time deadline = absl::Now() + kBudget;
  int kills = 0, inside_writes = 0;
  while (kills < kKills && absl::Now() < deadline) {
    auto state = daemon.Client()->GetJob(job->name());
    ASSERT_TRUE(state.ok()) << state.status();
    if (state->state() == v1::SUCCEEDED) break;
    ASSERT_NE(state->state(), v1::FAILED) << state->reason();
    if (kills % 2 == 0) {
      // Inside a checkpoint write: wait for its temp file (bounded), then kill.
      if (WaitFor([&] { return HasTempFile(dir); }, absl::Seconds(20))) ++inside_writes;
    } else {
      absl::SleepFor(absl::Milliseconds(std::uniform_int_distribution<int>(50, 900)(rng)));
    }
    daemon.Kill9();
    ++kills;
    ASSERT_TRUE(daemon.Start().ok()) << daemon.log();
  }
  v1::Job done;
  ASSERT_TRUE(WaitForJob(*daemon.Client(), job->name(),
                         [](const v1::Job& j) { return j.state() == v1::SUCCEEDED; },
                         absl::Seconds(120), &done))
      << done.DebugString() << daemon.log();
  std::printf("fault injection: %d kills, %d inside checkpoint writes\n", kills, inside_writes);
  EXPECT_GE(kills, 2);
  EXPECT_GE(inside_writes, 1);

  auto got = ReadCheckpoint(dir + "/" + CheckpointFileNameOf(kSteps));
  ASSERT_TRUE(got.ok()) << got.status();
  EXPECT_EQ(got->meta.step(), kSteps);
  ASSERT_EQ(got->tensors.size(), want->tensors.size());
  for (const auto& [name, tensor] : want->tensors) {
    auto it = got->tensors.find(name);
    ASSERT_NE(it, got->tensors.end()) << name;
    EXPECT_EQ(it->second.shape, tensor.shape) << name;
    EXPECT_EQ(0, std::memcmp(it->second.data.data(), tensor.data.data(),
                             tensor.data.size() * sizeof(float)))
        << name << " differs from the uninterrupted run";
  }
  EXPECT_FALSE(HasTempFile(dir)) << "temp files of interrupted writes are removed";

  // Every step's record once, in order.
  std::vector<int64_t> steps;
  v1::StreamMetricsRequest request;
  request.set_name(job->name());
  ASSERT_TRUE(daemon.Client()->StreamMetrics(request, [&](const v1::MetricRecord& r) {
    if (r.has_step()) steps.push_back(r.step().step());
    return true;
  }).ok());
  std::vector<int64_t> each(kSteps);
  for (int i = 0; i < kSteps; ++i) each[i] = i + 1;
  EXPECT_EQ(steps, each);
}

}  // namespace
}  // namespace fp8d::itest
