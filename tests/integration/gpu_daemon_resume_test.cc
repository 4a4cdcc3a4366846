// Exact resume on the GPU through the daemon: `fp8d --engine cuda` trains the 124m preset (byte
// vocabulary, B16 x T1024 of real text from FP8D_PARITY_TEXT) under delayed scaling twice. The
// first job runs straight through; the second is killed with SIGKILL after its first checkpoint,
// the daemon is restarted on the same state dir, and the job resumes from that checkpoint. Both
// final checkpoints must hold the same bytes in every tensor (weights, AdamW moments, FP8 scales
// and amax histories), and the resumed job's step losses must equal the first job's.
//
// Needs a GPU and the text (SKIPPED otherwise, saying which). From the GPU bundle:
//   FP8D_BIN_DIR=bundle/bin FP8D_PARITY_TEXT=bundle/data/text.txt \
//     bundle/bin/fp8d_integration_tests --gtest_filter='GpuDaemonResume*'
#include <cstring>
#include <map>
#include <string>

#include "absl/strings/str_cat.h"
#include "core/checkpoint.h"
#include "gtest/gtest.h"
#include "tests/integration/daemon_harness.h"

namespace fp8d::itest {
namespace {

namespace v1 = fp8d::v1;

constexpr int kSteps = 30;
constexpr int kCheckpointInterval = 10;
// The second job is killed once its stream shows this step: past the step-10 checkpoint, so the
// restart re-runs steps 11.. from it.
constexpr int kKillAfterStep = 14;

std::string JobText(const std::string& name, const std::string& text_file) {
  return absl::StrCat("name: ", name, "\n",
                      "model:\n  preset: 124m\n  vocab_size: 256\n",
                      "data:\n  train: ", text_file, "\n",
                      "optimizer:\n  lr: 6.0e-4\n  warmup_steps: 5\n",
                      "steps: ", kSteps, "\n",
                      "batch_size: 16\nseq_len: 1024\n",
                      "log_interval: 1\neval_interval: 0\n",
                      "checkpoint_interval: ", kCheckpointInterval, "\n",
                      "seed: 4242\n",
                      "recipe:\n  name: delayed\n  policy:\n    min_gemm_dim: 16\n");
}

// Step -> loss from the job's persisted metric log (the replay, not a live follow).
std::map<int64_t, float> StepLosses(client::TrainerClient& client, const std::string& job) {
  std::map<int64_t, float> losses;
  v1::StreamMetricsRequest request;
  request.set_name(job);
  const absl::Status s = client.StreamMetrics(request, [&](const v1::MetricRecord& r) {
    if (r.has_step()) losses[r.step().step()] = r.step().loss();
    return true;
  });
  EXPECT_TRUE(s.ok()) << s;
  return losses;
}

bool Finished(const v1::Job& j) {
  return j.state() == v1::SUCCEEDED || j.state() == v1::FAILED || j.state() == v1::CANCELLED;
}

TensorMap PullFinalTensors(client::TrainerClient& client, const std::string& job,
                           const std::string& path) {
  absl::StatusOr<client::PullResult> pulled = client.PullCheckpoint(job, path);
  EXPECT_TRUE(pulled.ok()) << pulled.status();
  absl::StatusOr<LoadedCheckpoint> loaded = ReadCheckpoint(path);
  EXPECT_TRUE(loaded.ok()) << loaded.status();
  if (!loaded.ok()) return {};
  EXPECT_EQ(loaded->meta.step(), kSteps);
  return std::move(loaded->tensors);
}

TEST(GpuDaemonResumeTest, KilledAndRestartedJobEndsWithTheUninterruptedJobsBytes) {
  CudaDaemonOnText run = StartCudaDaemonOnText("gpu-resume");
  if (!run.skip.empty()) GTEST_SKIP() << run.skip;
  ASSERT_TRUE(run.status.ok()) << run.status << "\n" << (run.daemon ? run.daemon->log() : "");
  Daemon& daemon = *run.daemon;

  auto client = daemon.Client();
  absl::StatusOr<v1::Job> straight = client->SubmitJobText(JobText("straight", run.text_file), {});
  ASSERT_TRUE(straight.ok()) << straight.status();
  v1::Job done;
  ASSERT_TRUE(WaitForJob(*client, straight->name(), Finished, absl::Minutes(4), &done))
      << daemon.log();
  ASSERT_EQ(done.state(), v1::SUCCEEDED) << done.reason();

  absl::StatusOr<v1::Job> killed = client->SubmitJobText(JobText("killed", run.text_file), {});
  ASSERT_TRUE(killed.ok()) << killed.status();
  ASSERT_TRUE(WaitForJob(*client, killed->name(),
                         [](const v1::Job& j) {
                           return j.state() == v1::RUNNING && j.step() >= kKillAfterStep;
                         },
                         absl::Minutes(4)))
      << daemon.log();
  daemon.Kill9();
  ASSERT_TRUE(daemon.Start().ok()) << daemon.log();
  client = daemon.Client();
  ASSERT_TRUE(WaitForJob(*client, killed->name(), Finished, absl::Minutes(4), &done))
      << daemon.log();
  ASSERT_EQ(done.state(), v1::SUCCEEDED) << done.reason();

  const std::map<int64_t, float> want = StepLosses(*client, straight->name());
  const std::map<int64_t, float> got = StepLosses(*client, killed->name());
  ASSERT_EQ(want.size(), size_t{kSteps});
  for (const auto& [step, loss] : want) {
    auto it = got.find(step);
    ASSERT_NE(it, got.end()) << "step " << step << " missing from the resumed job's log";
    EXPECT_EQ(it->second, loss) << "step " << step;
  }

  const TensorMap a = PullFinalTensors(*client, straight->name(), run.root + "/straight.safetensors");
  const TensorMap b = PullFinalTensors(*client, killed->name(), run.root + "/killed.safetensors");
  ASSERT_FALSE(a.empty());
  ASSERT_EQ(a.size(), b.size());
  size_t differing = 0;
  for (const auto& [name, t] : a) {
    auto it = b.find(name);
    ASSERT_NE(it, b.end()) << name;
    ASSERT_EQ(it->second.data.size(), t.data.size()) << name;
    if (std::memcmp(it->second.data.data(), t.data.data(), t.data.size() * sizeof(float)) != 0) {
      if (++differing <= 5) ADD_FAILURE() << "tensor " << name << " differs";
    }
  }
  EXPECT_EQ(differing, 0u) << differing << " of " << a.size() << " tensors differ";
  std::printf("124m delayed through fp8d --engine cuda: killed after step %d, resumed, final "
              "loss %.6f; %zu tensors byte-identical to the uninterrupted job\n",
              kKillAfterStep, want.rbegin()->second, a.size() - differing);
  EXPECT_EQ(daemon.Terminate(), 0) << daemon.log();
}

}  // namespace
}  // namespace fp8d::itest
