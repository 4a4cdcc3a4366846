// The main path through the daemon with the C++ client: submit, watch, switch the recipe mid-run,
// follow amax telemetry, save and pull a checkpoint that resumes, cancel.
#include <filesystem>
#include <memory>
#include <thread>

#include "absl/strings/match.h"
#include "core/checkpoint.h"
#include "core/cpu_engine.h"
#include "core/model_config.h"
#include "core/recipe_config.h"
#include "core/trainer.h"
#include "core/sha256.h"
#include "gtest/gtest.h"
#include "tests/integration/daemon_harness.h"

namespace fp8d::itest {
namespace {
namespace v1 = fp8d::v1;

constexpr int64_t kTwoMiB = 2 * 1024 * 1024;

bool IsRunning(const v1::Job& j) { return j.state() == v1::RUNNING; }

struct CollectingSink : MetricSink {
  std::vector<v1::MetricRecord> records;
  void OnMetric(const v1::MetricRecord& r) override { records.push_back(r); }
  void OnAmax(const v1::AmaxRecord&) override {}
};

// Resumes a pulled checkpoint in this process with the CPU engine and trains two more steps.
void ExpectResumesAndTrains(const std::string& path, const std::string& data_root) {
  auto loaded = ReadCheckpoint(path);
  ASSERT_TRUE(loaded.ok()) << loaded.status();
  v1::JobSpec spec = loaded->meta.spec();
  spec.set_steps(static_cast<int32_t>(loaded->meta.step() + 2));
  auto model = ResolveModelConfig(spec.model());
  auto recipe = ResolveRecipe(spec.recipe());
  ASSERT_TRUE(model.ok() && recipe.ok());
  auto engine = CpuEngine::Create(*model, *recipe, spec.seed());
  ASSERT_TRUE(engine.ok()) << engine.status();
  CollectingSink sink;
  TrainerOptions options;
  options.checkpoint_dir = data_root + "/resumed";
  options.data_root = data_root;
  auto trainer = Trainer::Create(spec, *std::move(engine), options, &sink);
  ASSERT_TRUE(trainer.ok()) << trainer.status();
  ASSERT_TRUE((*trainer)->ResumeFrom(path).ok());
  EXPECT_EQ((*trainer)->Snapshot().step, loaded->meta.step());
  auto outcome = (*trainer)->Run();
  ASSERT_TRUE(outcome.ok()) << outcome.status();
  EXPECT_EQ(*outcome, RunOutcome::kSucceeded);
  EXPECT_EQ((*trainer)->Snapshot().step, loaded->meta.step() + 2);
}

TEST(DaemonLifecycle, SubmitSwitchRecipeMidRunPullCheckpointAndCancel) {
  auto f = StartDaemonWithCorpus("lifecycle");
  ASSERT_TRUE(f.daemon->running());
  auto& client = *f.client;

  JobFileOptions options;
  options.steps = 100000;  // runs until cancelled
  auto job = client.SubmitJobText(JobYaml(options), {"optimizer.lr=1e-3"});
  ASSERT_TRUE(job.ok()) << job.status();
  EXPECT_EQ(job->state(), v1::QUEUED);
  EXPECT_EQ(job->recipe_version(), 1);
  EXPECT_TRUE(absl::StartsWith(job->name(), "jobs/it-")) << job->name();
  const std::string name = job->name();

  ASSERT_TRUE(WaitForJob(client, name, [](const v1::Job& j) { return IsRunning(j) && j.step() >= 3; },
                         absl::Seconds(60)))
      << f.daemon->log();

  // Switch bf16 -> delayed with a reset amax history, mid-run.
  v1::UpdateRecipeRequest update;
  update.set_name(name);
  update.mutable_recipe()->set_name("delayed");
  update.mutable_recipe()->set_amax_history_len(8);
  // Every layer FP8 on the tiny preset, as the job file says for its own recipe.
  update.mutable_recipe()->mutable_policy()->set_min_gemm_dim(options.min_gemm_dim);
  update.set_amax_handling(v1::AMAX_RESET);
  auto ticket = client.UpdateRecipe(update);
  ASSERT_TRUE(ticket.ok()) << ticket.status();
  EXPECT_EQ(ticket->recipe_version(), 2);
  EXPECT_EQ(ticket->amax_handling(), v1::AMAX_RESET);
  const int64_t effective = ticket->effective_step();
  EXPECT_GE(effective, 4);

  // Replay from step 1 and follow until a few steps under the new recipe were seen.
  v1::StreamMetricsRequest stream;
  stream.set_name(name);
  stream.set_follow(true);
  int64_t last_step = 0;
  bool saw_change_event = false;
  int steps_before = 0, steps_after = 0;
  absl::Status s = client.StreamMetrics(stream, [&](const v1::MetricRecord& r) {
    if (r.has_event() && r.event().kind() == "recipe_changed") {
      saw_change_event = true;
      EXPECT_EQ(r.event().recipe_version(), 2);
      EXPECT_EQ(r.event().recipe().name(), "delayed");
      EXPECT_EQ(r.event().amax_handling(), v1::AMAX_RESET);
    }
    if (r.has_step()) {
      EXPECT_GT(r.step().step(), last_step) << "steps arrive in order";
      last_step = r.step().step();
      if (r.step().step() < effective) {
        ++steps_before;
        EXPECT_EQ(r.step().recipe_version(), 1) << "step " << r.step().step();
        EXPECT_EQ(r.step().recipe_name(), "bf16");
        EXPECT_EQ(r.step().fp8_layers(), 0);
      } else {
        ++steps_after;
        EXPECT_EQ(r.step().recipe_version(), 2) << "step " << r.step().step();
        EXPECT_EQ(r.step().recipe_name(), "delayed");
        EXPECT_GT(r.step().fp8_layers(), 0);
      }
    }
    return steps_after < 5;
  });
  ASSERT_TRUE(s.ok()) << s;
  EXPECT_TRUE(saw_change_event);
  EXPECT_GE(steps_before, 3);
  EXPECT_EQ(steps_after, 5);

  // Amax telemetry starts at the switch and carries the new version; the layer filter applies.
  v1::StreamAmaxRequest amax;
  amax.set_name(name);
  amax.set_layer_regex("layers\\.0\\.");
  int amax_records = 0;
  s = client.StreamAmax(amax, [&](const v1::AmaxRecord& r) {
    ++amax_records;
    EXPECT_GE(r.step(), effective);
    EXPECT_EQ(r.recipe_version(), 2);
    EXPECT_FALSE(r.tensors().empty());
    for (const auto& t : r.tensors()) {
      EXPECT_TRUE(absl::StrContains(t.layer(), "layers.0.")) << t.layer();
      EXPECT_GT(t.amax(), 0.f) << t.layer();
      EXPECT_LE(t.history_size(), 8);
    }
    return true;
  });
  ASSERT_TRUE(s.ok()) << s;
  EXPECT_GE(amax_records, 5);

  auto recipe = client.GetRecipe(name);
  ASSERT_TRUE(recipe.ok()) << recipe.status();
  EXPECT_EQ(recipe->recipe().name(), "delayed");
  EXPECT_EQ(recipe->recipe_version(), 2);
  EXPECT_EQ(recipe->since_step(), effective);
  EXPECT_GT(recipe->fp8_layers(), 0);
  EXPECT_EQ(recipe->fp8_layer_names_size(), recipe->fp8_layers());

  // Save, list and pull a checkpoint; the pulled file hashes right and resumes.
  auto saved = client.SaveCheckpoint(name);
  ASSERT_TRUE(saved.ok()) << saved.status();
  EXPECT_GE(saved->step(), effective);
  EXPECT_EQ(saved->recipe_version(), 2);
  EXPECT_GT(saved->size_bytes(), 0);
  auto listed = client.ListCheckpoints(name);
  ASSERT_TRUE(listed.ok()) << listed.status();
  bool listed_it = false;
  for (const auto& c : *listed) listed_it |= c.name() == saved->name();
  EXPECT_TRUE(listed_it);
  // The metric stream records the save with the checkpoint's resource name, ready to pull.
  v1::StreamMetricsRequest since_save;
  since_save.set_name(name);
  since_save.set_from_step(saved->step());
  bool saw_saved_event = false;
  ASSERT_TRUE(client.StreamMetrics(since_save, [&](const v1::MetricRecord& r) {
                      saw_saved_event |= r.has_event() && r.event().kind() == "checkpoint_saved" &&
                                         r.event().checkpoint() == saved->name();
                      return true;
                    }).ok());
  EXPECT_TRUE(saw_saved_event);

  const std::string out = f.root + "/pulled.safetensors";
  int64_t progress_calls = 0;
  auto pulled = client.PullCheckpoint(saved->name(), out, [&](int64_t, int64_t) { ++progress_calls; });
  ASSERT_TRUE(pulled.ok()) << pulled.status();
  EXPECT_EQ(pulled->sha256, saved->sha256());
  EXPECT_EQ(pulled->size_bytes, saved->size_bytes());
  EXPECT_EQ(*Sha256File(out), saved->sha256());
  EXPECT_GE(progress_calls, (saved->size_bytes() + kTwoMiB - 1) / kTwoMiB);
  EXPECT_FALSE(std::filesystem::exists(out + ".partial"));
  auto loaded = ReadCheckpoint(out);  // verifies the data hash inside the file too
  ASSERT_TRUE(loaded.ok()) << loaded.status();
  EXPECT_EQ(loaded->meta.step(), saved->step());
  EXPECT_EQ(loaded->meta.recipe_version(), 2);
  EXPECT_EQ(loaded->meta.recipe().name(), "delayed");
  ExpectResumesAndTrains(out, f.root + "/data");

  // Cancel: the job ends CANCELLED with a reason; a second cancel is a wrong-state error.
  auto cancelled = client.CancelJob(name);
  ASSERT_TRUE(cancelled.ok()) << cancelled.status();
  v1::Job final_job;
  ASSERT_TRUE(WaitForJob(client, name, [](const v1::Job& j) { return j.state() == v1::CANCELLED; },
                         absl::Seconds(30), &final_job));
  EXPECT_FALSE(final_job.reason().empty());
  EXPECT_GT(final_job.end_unix_micros(), 0);
  EXPECT_EQ(client.CancelJob(name).status().code(), absl::StatusCode::kFailedPrecondition);
}

}  // namespace
}  // namespace fp8d::itest
