// bf16 -> delayed -> current -> bf16 through the daemon on the GPU: `fp8d --engine cuda` runs a
// 124m-shaped job on real text (the file named by FP8D_PARITY_TEXT), the test follows its
// metric stream with the C++ client and, once the stream shows a chosen step, asks for the next
// recipe with UpdateRecipe. It asserts that the job succeeds, that each change took effect at the
// step the daemon announced (the step records and the recipe_changed events say so), that every
// loss is finite with no step skipped, and that no switch makes the loss jump.
//
// Needs a GPU and the text: without FP8D_PARITY_TEXT, without an NVIDIA device, or with an fp8d
// built without CUDA, the test says SKIPPED and why. The same sequence and checks run on the CPU
// engine with the tiny preset (RecipeSwitchThroughDaemonTest) on any machine. From the GPU
// bundle it runs as
//   FP8D_BIN_DIR=bundle/bin FP8D_PARITY_TEXT=bundle/data/text.txt \
//     bundle/bin/fp8d_integration_tests --gtest_filter='GpuRecipeSwitch*'
#include <cmath>
#include <cstdio>
#include <map>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/notification.h"
#include "absl/time/clock.h"
#include "gtest/gtest.h"
#include "tests/integration/daemon_harness.h"

namespace fp8d::itest {
namespace {

namespace v1 = fp8d::v1;


// The switch sequence: phase p + 1 is requested once the stream shows step request_at[p]; the
// daemon applies it at the next step boundary it reaches, which it announces.
constexpr const char* kPhases[] = {"bf16", "delayed", "current", "bf16"};
constexpr int kSwitches = 3;
// Steps compared on each side of a switch.
constexpr int kWindow = 10;
// The recipe policy of the jobs and of every switch: every GEMM but the LM head FP8 under an FP8
// recipe (16, the smallest size FP8 GEMMs take, overrides the automatic size threshold, which
// may keep small GEMMs BF16 for speed).
constexpr int kAllLayersMinGemmDim = 16;

// One run of the sequence through a started daemon.
struct SwitchPlan {
  std::string job_text;        // a job file with recipe bf16 and log_interval 1
  int steps = 0;
  int request_at[kSwitches] = {};
  int fp8_layers = 0;          // GEMM layers FP8 under delayed and current
  // Mean loss of the kWindow steps after a switch <= mean of the kWindow before x (1 + this).
  double spike_tol = 0.0;
  absl::Duration timeout;      // the job is cancelled (and the test fails) past this
  std::string what;            // for the printed table
};

v1::UpdateRecipeRequest SwitchTo(const std::string& job, const std::string& recipe) {
  v1::UpdateRecipeRequest update;
  update.set_name(job);
  update.mutable_recipe()->set_name(recipe);
  update.mutable_recipe()->mutable_policy()->set_min_gemm_dim(kAllLayersMinGemmDim);
  update.set_amax_handling(v1::AMAX_KEEP);
  return update;
}

std::string JobText(const std::string& model, const std::string& train, const std::string& lr,
                    int steps, int batch, int seq_len) {
  return absl::StrCat("name: recipe-switch\n",
                      "model:\n", model,
                      "data:\n  train: ", train, "\n",
                      "optimizer:\n  lr: ", lr, "\n  warmup_steps: 16\n",
                      "steps: ", steps, "\n",
                      "batch_size: ", batch, "\n",
                      "seq_len: ", seq_len, "\n",
                      "log_interval: 1\n",
                      "eval_batches: 4\n",
                      "recipe:\n  name: bf16\n  policy:\n    min_gemm_dim: ",
                      kAllLayersMinGemmDim, "\n");
}

struct StepSeen {
  float loss = 0.f;
  std::string recipe;
  int32_t version = 0;
  int32_t fp8_layers = 0;
  int64_t skipped_steps = 0;
};

struct SwitchSeen {
  int64_t requested_after = 0;   // the last step the stream had shown when the switch was asked
  v1::UpdateRecipeResponse ticket;
  int64_t event_step = -1;       // recipe_changed event's step boundary; -1 when none arrived
  std::string event_recipe;
};

double MeanLoss(const std::map<int64_t, StepSeen>& steps, int64_t first, int64_t last) {
  double sum = 0;
  for (int64_t s = first; s <= last; ++s) sum += steps.at(s).loss;
  return sum / static_cast<double>(last - first + 1);
}

// Submits the plan's job, switches bf16 -> delayed -> current -> bf16 while following its
// metrics, and checks what the top of this file says.
void RunSwitches(Daemon& daemon, const SwitchPlan& plan) {
  auto client = daemon.Client();
  absl::StatusOr<v1::Job> job = client->SubmitJobText(plan.job_text, {});
  ASSERT_TRUE(job.ok()) << job.status();
  const std::string name = job->name();

  // If the job hangs, cancelling it ends the metric stream below (and fails the test).
  absl::Notification stream_done;
  std::thread watchdog([&] {
    if (!stream_done.WaitForNotificationWithTimeout(plan.timeout)) {
      const absl::StatusOr<v1::Job> cancelled = daemon.Client()->CancelJob(name);
      ADD_FAILURE() << "the job did not finish within " << plan.timeout << "; cancelled it: "
                    << cancelled.status();
    }
  });

  std::map<int64_t, StepSeen> steps;
  std::vector<SwitchSeen> switches;
  std::vector<std::string> errors;  // from inside the stream callback
  float final_eval = NAN;
  v1::StreamMetricsRequest stream;
  stream.set_name(name);
  stream.set_follow(true);
  const absl::Time start = absl::Now();
  const absl::Status streamed = client->StreamMetrics(stream, [&](const v1::MetricRecord& r) {
    if (r.has_step()) {
      const v1::StepMetrics& m = r.step();
      if (steps.count(m.step())) errors.push_back(absl::StrCat("step ", m.step(), " twice"));
      steps[m.step()] = {m.loss(), m.recipe_name(), m.recipe_version(), m.fp8_layers(),
                         m.skipped_steps()};
      const size_t next = switches.size();
      if (next < kSwitches && m.step() >= plan.request_at[next]) {
        SwitchSeen sw;
        sw.requested_after = m.step();
        absl::StatusOr<v1::UpdateRecipeResponse> ticket =
            client->UpdateRecipe(SwitchTo(name, kPhases[next + 1]));
        if (!ticket.ok()) {
          errors.push_back(absl::StrCat("switch to ", kPhases[next + 1], " after step ",
                                        m.step(), ": ", ticket.status().ToString()));
          return false;
        }
        sw.ticket = *ticket;
        switches.push_back(sw);
      }
    } else if (r.has_event()) {
      const v1::Event& e = r.event();
      if (e.kind() == "recipe_changed") {
        bool matched = false;
        for (SwitchSeen& sw : switches) {
          if (sw.ticket.recipe_version() == e.recipe_version()) {
            sw.event_step = e.step();
            sw.event_recipe = e.recipe().name();
            matched = true;
          }
        }
        // The switch is asked from this callback and answered before the stream reads on.
        if (!matched) {
          errors.push_back(absl::StrCat("recipe_changed event for version ", e.recipe_version(),
                                        " that no UpdateRecipe asked for: ", e.message()));
        }
      } else if (e.kind() == "failed" || e.kind() == "cancelled") {
        errors.push_back(absl::StrCat(e.kind(), ": ", e.message()));
      }
    } else if (r.has_eval()) {
      final_eval = r.eval().loss();
    }
    return true;
  });
  const double seconds = absl::ToDoubleSeconds(absl::Now() - start);
  stream_done.Notify();
  watchdog.join();
  ASSERT_TRUE(streamed.ok()) << streamed;
  for (const std::string& e : errors) ADD_FAILURE() << e;

  v1::Job last;
  ASSERT_TRUE(WaitForJob(
      *client, name,
      [](const v1::Job& j) {
        return j.state() == v1::SUCCEEDED || j.state() == v1::FAILED ||
               j.state() == v1::CANCELLED;
      },
      absl::Seconds(60), &last))
      << daemon.log();
  EXPECT_EQ(last.state(), v1::SUCCEEDED) << last.reason() << "\n" << daemon.log();

  // Every step once, each loss finite and none skipped.
  ASSERT_EQ(static_cast<int>(steps.size()), plan.steps);
  ASSERT_EQ(steps.begin()->first, 1);
  ASSERT_EQ(steps.rbegin()->first, plan.steps);
  for (const auto& [step, seen] : steps) {
    EXPECT_TRUE(std::isfinite(seen.loss)) << "step " << step << " loss " << seen.loss;
    EXPECT_EQ(seen.skipped_steps, 0) << "step " << step;
  }

  // Each change at the step the daemon announced: versions 2, 3, 4 in order, the event at the
  // boundary just before, every step record from there on under the new recipe and version and
  // every one before under the old.
  ASSERT_EQ(static_cast<int>(switches.size()), kSwitches);
  for (int i = 0; i < kSwitches; ++i) {
    const SwitchSeen& sw = switches[i];
    EXPECT_EQ(sw.ticket.recipe_version(), i + 2) << "switch " << i;
    EXPECT_GT(sw.ticket.effective_step(), sw.requested_after) << "switch " << i;
    EXPECT_EQ(sw.event_step + 1, sw.ticket.effective_step())
        << "switch " << i << ": recipe_changed event";
    EXPECT_EQ(sw.event_recipe, kPhases[i + 1]) << "switch " << i;
  }
  for (const auto& [step, seen] : steps) {
    int phase = 0;
    while (phase < kSwitches && step >= switches[phase].ticket.effective_step()) ++phase;
    EXPECT_EQ(seen.recipe, kPhases[phase]) << "step " << step;
    EXPECT_EQ(seen.version, phase + 1) << "step " << step;
    const bool fp8 = std::string(kPhases[phase]) != "bf16";
    EXPECT_EQ(seen.fp8_layers, fp8 ? plan.fp8_layers : 0) << "step " << step << " " << seen.recipe;
  }

  // No spike: the kWindow steps after each switch against the kWindow before it.
  std::printf("recipe switches through fp8d, %s: %d steps in %.1f s, final eval loss %.4f\n",
              plan.what.c_str(), plan.steps, seconds, final_eval);
  std::printf("%-18s %7s %9s %7s %12s %12s %8s\n", "switch", "asked@", "effective", "event@",
              "mean_before", "mean_after", "ratio");
  for (int i = 0; i < kSwitches; ++i) {
    const int64_t e = switches[i].ticket.effective_step();
    ASSERT_GE(e - kWindow, 1) << "switch " << i << " came too early to compare";
    ASSERT_LE(e + kWindow - 1, plan.steps) << "switch " << i << " came too late to compare";
    const double before = MeanLoss(steps, e - kWindow, e - 1);
    const double after = MeanLoss(steps, e, e + kWindow - 1);
    const std::string label = absl::StrCat(kPhases[i], " -> ", kPhases[i + 1]);
    std::printf("%-18s %7lld %9lld %7lld %12.4f %12.4f %8.4f\n", label.c_str(),
                static_cast<long long>(switches[i].requested_after),
                static_cast<long long>(e), static_cast<long long>(switches[i].event_step), before,
                after, after / before);
    EXPECT_LE(after, before * (1 + plan.spike_tol))
        << label << " at step " << e << ": mean loss " << after << " over the " << kWindow
        << " steps after, " << before << " over the " << kWindow << " before";
  }
  std::fflush(stdout);
  EXPECT_TRUE(std::isfinite(final_eval));
}

// The GPU run: 124m widths with the byte-level vocabulary, 160 steps of 16 x 1024 tokens of
// real text, four phases of about 40 steps, peak rate 6e-4 after 16 warm-up steps.
TEST(GpuRecipeSwitchTest, Bf16DelayedCurrentBf16On124mSwitchAtAnnouncedStepsWithoutSpikes) {
  CudaDaemonOnText run = StartCudaDaemonOnText("gpu-switch");
  if (!run.skip.empty()) GTEST_SKIP() << run.skip;
  ASSERT_TRUE(run.status.ok()) << run.status << "\n" << (run.daemon ? run.daemon->log() : "");
  Daemon& daemon = *run.daemon;
  absl::StatusOr<v1::ServerInfo> info = daemon.Client()->GetServerInfo();
  ASSERT_TRUE(info.ok()) << info.status();

  SwitchPlan plan;
  plan.steps = 160;
  plan.job_text = JobText("  preset: 124m\n  vocab_size: 256\n", run.text_file,
                          "6.0e-4", plan.steps, 16, 1024);
  plan.request_at[0] = 40;
  plan.request_at[1] = 80;
  plan.request_at[2] = 120;
  // All 48 block GEMMs of the 124m preset; the LM head stays BF16.
  plan.fp8_layers = 48;
  // Over these windows the loss is falling (peak rate from step 16, cosine after), so the
  // expected ratio is below 1; the tolerance absorbs batch-to-batch noise: a step is 16 random
  // 1 KiB windows of mixed English text, a few percent apart, so a mean of 10 moves by about 1%.
  // A switch that breaks training (wrong scales, lost weights or moments, a NaN) moves it by far
  // more than 5%.
  plan.spike_tol = 0.05;
  // About 20 s on an H100: engine start, 160 steps, final eval, a 1 GB final checkpoint.
  plan.timeout = absl::Minutes(5);
  plan.what = absl::StrCat("cuda on ", info->device_name(), ", 124m-shaped, 16x1024 tokens of ",
                           (daemon.data_root() + "/" + run.text_file));
  RunSwitches(daemon, plan);
  EXPECT_EQ(daemon.Terminate(), 0) << daemon.log();
}

// The same sequence and checks with the CPU engine and the tiny preset, so the machinery runs
// with the other integration tests on any machine. 256 tokens a step of the harness's 40-word
// text give per-step noise of several percent, which a mean of 10 steps only partly removes;
// a broken switch still shows as far more.
constexpr double kCpuSpikeTol = 0.10;

TEST(RecipeSwitchThroughDaemonTest, Bf16DelayedCurrentBf16OnTinyCpuSwitchAtAnnouncedSteps) {
  DaemonFixture f = StartDaemonWithCorpus("cpu-switch");
  ASSERT_TRUE(f.daemon->running());
  SwitchPlan plan;
  plan.steps = 100;
  plan.job_text = JobText("  preset: tiny\n", "corpus.txt", "3.0e-3", plan.steps, 4, 64);
  plan.request_at[0] = 25;
  plan.request_at[1] = 50;
  plan.request_at[2] = 75;
  plan.fp8_layers = 8;  // 2 layers x (qkv, out, gate/up, down); the LM head stays BF16
  plan.spike_tol = kCpuSpikeTol;
  plan.timeout = absl::Minutes(3);
  plan.what = "cpu, tiny, 4x64 tokens of the harness's corpus";
  RunSwitches(*f.daemon, plan);
}

}  // namespace
}  // namespace fp8d::itest
