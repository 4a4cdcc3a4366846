// fp8ctl as users run it: every command against a real daemon, JSON output for scripts, plain
// output for logs, resumable pulls, and error reporting with the status code and exit code.
#include <filesystem>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "core/sha256.h"
#include "google/protobuf/util/json_util.h"
#include "gtest/gtest.h"
#include "tests/integration/daemon_harness.h"

namespace fp8d::itest {
namespace {
namespace v1 = fp8d::v1;

std::vector<std::string> Lines(const std::string& text) {
  return absl::StrSplit(text, '\n', absl::SkipEmpty());
}

class Fp8ctl : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    fixture_ = new DaemonFixture(StartDaemonWithCorpus("fp8ctl"));
    JobFileOptions options;
    options.name = "cli";
    options.steps = 30;
    options.recipe = "delayed";
    options.checkpoint_interval = 10;
    WriteFile(fixture_->root + "/job.yaml", JobYaml(options));
  }
  static void TearDownTestSuite() {
    delete fixture_;
    fixture_ = nullptr;
  }
  CommandResult Run(const std::vector<std::string>& args) { return fixture_->daemon->Fp8ctl(args); }
  // Submits job.yaml with --json and returns the job name.
  std::string Submit(const std::vector<std::string>& sets) {
    std::vector<std::string> args = {"--json", "submit", fixture_->root + "/job.yaml"};
    for (const auto& s : sets) {
      args.push_back("--set");
      args.push_back(s);
    }
    auto r = Run(args);
    EXPECT_EQ(r.exit_code, 0) << r.err;
    v1::Job job;
    EXPECT_TRUE(google::protobuf::util::JsonStringToMessage(r.out, &job).ok()) << r.out;
    return job.name();
  }
  static DaemonFixture* fixture_;
};
DaemonFixture* Fp8ctl::fixture_ = nullptr;

TEST_F(Fp8ctl, SubmitWatchJsonStreamsOneObjectPerLineUntilTheJobEnds) {
  const std::string job = Submit({});
  ASSERT_FALSE(job.empty());
  auto watch = Run({"--json", "watch", job});
  ASSERT_EQ(watch.exit_code, 0) << watch.err;
  int64_t last_step = 0;
  bool finished = false;
  for (const auto& line : Lines(watch.out)) {
    v1::MetricRecord r;
    ASSERT_TRUE(google::protobuf::util::JsonStringToMessage(line, &r).ok()) << line;
    if (r.has_step()) last_step = r.step().step();
    if (r.has_event() && r.event().kind() == "finished") finished = true;
  }
  EXPECT_EQ(last_step, 30);
  EXPECT_TRUE(finished);

  auto jobs = Run({"jobs"});
  ASSERT_EQ(jobs.exit_code, 0) << jobs.err;
  EXPECT_TRUE(absl::StrContains(jobs.out, job)) << jobs.out;
  EXPECT_TRUE(absl::StrContains(jobs.out, "SUCCEEDED")) << jobs.out;
  auto show = Run({"show", job.substr(5)});  // bare id works too
  ASSERT_EQ(show.exit_code, 0) << show.err;
  EXPECT_TRUE(absl::StrContains(show.out, "step 30/30")) << show.out;
  EXPECT_TRUE(absl::StrContains(show.out, "recipe delayed")) << show.out;
}

TEST_F(Fp8ctl, WatchWithoutTerminalPrintsPlainProgressLinesFromAStep) {
  const std::string job = Submit({"steps=12"});
  auto watch = Run({"watch", job, "--from-step", "5"});
  ASSERT_EQ(watch.exit_code, 0) << watch.err;
  EXPECT_FALSE(absl::StrContains(watch.out, "\033[")) << "no terminal control codes in a pipe";
  EXPECT_TRUE(absl::StrContains(watch.out, "step 12/12 loss ")) << watch.out;
  EXPECT_TRUE(absl::StrContains(watch.out, "recipe delayed v1 fp8 ")) << watch.out;
  EXPECT_TRUE(absl::StrContains(watch.out, " eta ")) << watch.out;
  EXPECT_FALSE(absl::StrContains(watch.out, "step 4/12 ")) << "--from-step 5 skips earlier steps";
  EXPECT_TRUE(absl::StrContains(watch.out, "SUCCEEDED")) << watch.out;
}

TEST_F(Fp8ctl, CheckpointListAndPullVerifyTheHashAndResumeAPartialFile) {
  const std::string job = Submit({"steps=20"});
  ASSERT_EQ(Run({"watch", job}).exit_code, 0);
  auto list = Run({"--json", "checkpoint", "list", job});
  ASSERT_EQ(list.exit_code, 0) << list.err;
  // A list is one JSON array.
  v1::ListCheckpointsResponse parsed;
  ASSERT_TRUE(google::protobuf::util::JsonStringToMessage(
                  absl::StrCat("{\"checkpoints\":", list.out, "}"), &parsed)
                  .ok())
      << list.out;
  ASSERT_EQ(Lines(list.out).size(), 1u) << list.out;
  std::vector<v1::Checkpoint> checkpoints(parsed.checkpoints().begin(), parsed.checkpoints().end());
  ASSERT_EQ(checkpoints.size(), 2u) << list.out;  // steps 10 and 20
  EXPECT_EQ(checkpoints.back().step(), 20);

  const std::string out = fixture_->root + "/latest.safetensors";
  auto pull = Run({"checkpoint", "pull", job, "--out", out});
  ASSERT_EQ(pull.exit_code, 0) << pull.err;
  EXPECT_TRUE(absl::StrContains(pull.out, "verified")) << pull.out;
  EXPECT_EQ(*Sha256File(out), checkpoints.back().sha256());

  // An interrupted pull: the first bytes are already in OUT.partial; the pull continues there.
  const std::string first_id = checkpoints.front().name().substr(checkpoints.front().name().rfind('/') + 1);
  const std::string out2 = fixture_->root + "/first.safetensors";
  auto full = Run({"checkpoint", "pull", job, first_id, "--out", out2});
  ASSERT_EQ(full.exit_code, 0) << full.err;
  const std::string bytes = ReadFile(out2);
  std::filesystem::remove(out2);
  WriteFile(out2 + ".partial", bytes.substr(0, 1000));
  auto resumed = Run({"checkpoint", "pull", job, first_id, "--out", out2});
  ASSERT_EQ(resumed.exit_code, 0) << resumed.err;
  EXPECT_TRUE(absl::StrContains(resumed.out, "resumed at byte 1000")) << resumed.out;
  EXPECT_EQ(ReadFile(out2), bytes);
  EXPECT_FALSE(std::filesystem::exists(out2 + ".partial"));

  // A partial of some other file fails verification once, then is pulled afresh.
  std::filesystem::remove(out2);
  WriteFile(out2 + ".partial", std::string(2000, 'x'));
  auto repaired = Run({"checkpoint", "pull", job, first_id, "--out", out2});
  ASSERT_EQ(repaired.exit_code, 0) << repaired.err;
  EXPECT_EQ(ReadFile(out2), bytes);
}

TEST_F(Fp8ctl, AmaxCsvFiltersLayersAndRecipeGetShowsTheActiveRecipe) {
  const std::string job = Submit({"steps=6"});
  ASSERT_EQ(Run({"watch", job}).exit_code, 0);
  auto csv = Run({"amax", job, "--csv", "--layer", "layers\\.1\\."});
  ASSERT_EQ(csv.exit_code, 0) << csv.err;
  auto lines = Lines(csv.out);
  ASSERT_GT(lines.size(), 1u);
  EXPECT_EQ(lines[0], "step,recipe_version,layer,role,format,amax,scale,frac_saturated,frac_underflow");
  for (size_t i = 1; i < lines.size(); ++i) {
    EXPECT_TRUE(absl::StrContains(lines[i], ",layers.1.")) << lines[i];
  }
  auto table = Run({"amax", job});
  ASSERT_EQ(table.exit_code, 0) << table.err;
  EXPECT_TRUE(absl::StrContains(table.out, "step 6, recipe v1")) << table.out;
  auto recipe = Run({"recipe", "get", job});
  ASSERT_EQ(recipe.exit_code, 0) << recipe.err;
  EXPECT_TRUE(absl::StrContains(recipe.out, "recipe delayed v1")) << recipe.out;
}

TEST_F(Fp8ctl, RecipeSetPauseResumeAndCancelARunningJob) {
  const std::string job = Submit({"steps=100000", "recipe.name=bf16"});
  auto& client = *fixture_->client;
  ASSERT_TRUE(WaitForJob(client, job, [](const v1::Job& j) { return j.state() == v1::RUNNING; },
                         absl::Seconds(60)));
  auto set = Run({"recipe", "set", job, "current", "--format", "e4m3", "--margin", "1", "--amax",
                  "reset", "--checkpoint-first"});
  ASSERT_EQ(set.exit_code, 0) << set.err;
  EXPECT_TRUE(absl::StrContains(set.out, "recipe current is version 2, effective before step"))
      << set.out;
  EXPECT_TRUE(absl::StrContains(set.out, "amax reset")) << set.out;
  EXPECT_TRUE(absl::StrContains(set.out, "checkpoint " + job + "/checkpoints/")) << set.out;
  auto recipe = client.GetRecipe(job);
  ASSERT_TRUE(recipe.ok());
  EXPECT_EQ(recipe->recipe().name(), "current");
  EXPECT_EQ(recipe->recipe().format(), "e4m3");
  EXPECT_EQ(recipe->recipe().margin(), 1);

  auto pause = Run({"pause", job});
  ASSERT_EQ(pause.exit_code, 0) << pause.err;
  EXPECT_TRUE(absl::StrContains(pause.out, "PAUSED")) << pause.out;
  const int64_t paused_at = client.GetJob(job)->step();
  absl::SleepFor(absl::Milliseconds(500));
  EXPECT_LE(client.GetJob(job)->step(), paused_at + 1) << "at most the step in flight finishes";
  auto save = Run({"checkpoint", "save", job});
  EXPECT_EQ(save.exit_code, 0) << save.err;
  auto resume = Run({"resume", job});
  ASSERT_EQ(resume.exit_code, 0) << resume.err;
  EXPECT_TRUE(absl::StrContains(resume.out, "RUNNING")) << resume.out;
  auto cancel = Run({"cancel", job});
  ASSERT_EQ(cancel.exit_code, 0) << cancel.err;
  ASSERT_TRUE(WaitForJob(client, job, [](const v1::Job& j) { return j.state() == v1::CANCELLED; },
                         absl::Seconds(30)));
}

TEST_F(Fp8ctl, ErrorsPrintTheStatusCodeAndExitNonZero) {
  auto missing = Run({"show", "jobs/nope-7"});
  EXPECT_EQ(missing.exit_code, 1);
  EXPECT_TRUE(absl::StartsWith(missing.err, "fp8ctl: NOT_FOUND: ")) << missing.err;
  auto bad = Run({"submit", fixture_->root + "/job.yaml", "--set", "recipe.name=fp4"});
  EXPECT_EQ(bad.exit_code, 1);
  EXPECT_TRUE(absl::StrContains(bad.err, "INVALID_ARGUMENT: ")) << bad.err;
  EXPECT_TRUE(absl::StrContains(bad.err, "recipe.name")) << bad.err;
  auto usage = Run({"frobnicate"});
  EXPECT_EQ(usage.exit_code, 2);
  auto unreachable = RunProcess({BinaryPath("fp8ctl"), "info"}, absl::Seconds(30),
                                {"FP8D_ADDR=127.0.0.1:" + std::to_string(PickFreePort())});
  EXPECT_EQ(unreachable.exit_code, 1);
  EXPECT_TRUE(absl::StrContains(unreachable.err, "UNAVAILABLE")) << unreachable.err;
}

TEST_F(Fp8ctl, AddressAndTokenFileComeFromTheEnvironment) {
  auto info = RunProcess({BinaryPath("fp8ctl"), "info"}, absl::Seconds(30),
                         {"FP8D_ADDR=" + fixture_->daemon->address()});
  ASSERT_EQ(info.exit_code, 0) << info.err;
  EXPECT_TRUE(absl::StrContains(info.out, "engine      cpu")) << info.out;
  EXPECT_TRUE(absl::StrContains(info.out, "recipes     ")) << info.out;
}

TEST(Fp8ctlAuth, TokenFileFromFlagOrEnvironment) {
  const std::string root = MakeTempDir("ctl-auth");
  const std::string token = "another-token-0123456789";
  WritePrivateFile(root + "/token", token + "\n");
  WritePrivateFile(root + "/wrong", "wrong-token-9876543210\n");
  std::filesystem::create_directories(root + "/data");
  Daemon daemon(root + "/state", root + "/data", {"--token-file", root + "/token"});
  ASSERT_TRUE(daemon.Start(token).ok()) << daemon.log();
  auto none = daemon.Fp8ctl({"jobs"});
  EXPECT_EQ(none.exit_code, 1);
  EXPECT_TRUE(absl::StrContains(none.err, "UNAUTHENTICATED")) << none.err;
  auto wrong = daemon.Fp8ctl({"--token-file", root + "/wrong", "jobs"});
  EXPECT_TRUE(absl::StrContains(wrong.err, "UNAUTHENTICATED")) << wrong.err;
  EXPECT_EQ(daemon.Fp8ctl({"--token-file", root + "/token", "jobs"}).exit_code, 0);
  EXPECT_EQ(daemon.Fp8ctl({"jobs"}, absl::Seconds(30), {"FP8D_TOKEN_FILE=" + root + "/token"}).exit_code, 0);
}

}  // namespace
}  // namespace fp8d::itest
