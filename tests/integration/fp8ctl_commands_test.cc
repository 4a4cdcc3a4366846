// fp8ctl's commands and command line through the real binaries: help per command, --version,
// usage errors naming the bad argument, the hint when no daemon answers, bash completion, lists
// as one JSON array, start and elapsed times, logs, compare, delete, continue from a checkpoint,
// live amax tables and streams "from now", and checkpoint pull's --force and Ctrl-C.
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <unistd.h>

#include <filesystem>
#include <regex>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "google/protobuf/struct.pb.h"
#include "google/protobuf/util/json_util.h"
#include "gtest/gtest.h"
#include "tests/integration/daemon_harness.h"

namespace fp8d::itest {
namespace {

namespace fs = std::filesystem;
namespace v1 = fp8d::v1;

std::vector<std::string> Lines(const std::string& text) {
  return absl::StrSplit(text, '\n', absl::SkipEmpty());
}

CommandResult Ctl(const std::vector<std::string>& args) {
  std::vector<std::string> argv = {BinaryPath("fp8ctl")};
  argv.insert(argv.end(), args.begin(), args.end());
  return RunProcess(argv, absl::Seconds(60));
}

TEST(Fp8ctlCommandLine, HelpPerCommandAndVersion) {
  auto version = Ctl({"--version"});
  EXPECT_EQ(version.exit_code, 0);
  EXPECT_TRUE(std::regex_match(version.out, std::regex("fp8ctl [0-9]+\\.[0-9]+\\.[0-9]+\n")))
      << version.out;

  auto help = Ctl({"help", "submit"});
  ASSERT_EQ(help.exit_code, 0) << help.err;
  for (const char* word : {"fp8ctl submit", "JOBFILE", "--set", "--request-id", "--watch"}) {
    EXPECT_TRUE(absl::StrContains(help.out, word)) << word << " in\n" << help.out;
  }
  EXPECT_FALSE(absl::StrContains(help.out, "--checkpoint-first")) << "only submit's options";
  auto flag = Ctl({"submit", "--help"});
  EXPECT_EQ(flag.exit_code, 0);
  EXPECT_EQ(flag.out, help.out);

  auto nested = Ctl({"help", "recipe", "set"});
  ASSERT_EQ(nested.exit_code, 0) << nested.err;
  EXPECT_TRUE(absl::StrContains(nested.out, "fp8ctl recipe set")) << nested.out;
  EXPECT_TRUE(absl::StrContains(nested.out, "--checkpoint-first")) << nested.out;
  EXPECT_EQ(Ctl({"recipe", "set", "--help"}).out, nested.out);

  auto all = Ctl({"--help"});
  EXPECT_EQ(all.exit_code, 0);
  for (const char* command : {"submit", "watch", "logs", "compare", "delete", "continue",
                              "completion", "amax", "checkpoint"}) {
    EXPECT_TRUE(absl::StrContains(all.out, command)) << command;
  }
  auto none = Ctl({});
  EXPECT_EQ(none.exit_code, 2);
  EXPECT_TRUE(absl::StrContains(none.err, "submit")) << "no command: the list of commands";
  EXPECT_EQ(Ctl({"help", "frobnicate"}).exit_code, 2);
}

TEST(Fp8ctlCommandLine, UsageErrorsNameTheBadArgumentAndNotEveryCommand) {
  struct Case {
    std::vector<std::string> args;
    std::string names;      // what the message must mention
    std::string help_hint;  // the command whose help it points to
  };
  const std::vector<Case> cases = {
      {{"submit", "job.yaml", "--bogus"}, "--bogus", "fp8ctl submit --help"},
      {{"amax", "demo-1", "--from-step", "soon"}, "--from-step", "fp8ctl amax --help"},
      {{"recipe", "set", "demo-1", "delayed", "--amax", "maybe"}, "--amax",
       "fp8ctl recipe set --help"},
      {{"recipe", "set", "demo-1", "delayed", "--margin", "x"}, "--margin",
       "fp8ctl recipe set --help"},
      {{"checkpoint", "pull", "demo-1"}, "--out", "fp8ctl checkpoint pull --help"},
      {{"show"}, "JOB", "fp8ctl show --help"},
      {{"frobnicate"}, "frobnicate", "fp8ctl --help"},
  };
  for (const Case& c : cases) {
    auto r = Ctl(c.args);
    SCOPED_TRACE(absl::StrJoin(c.args, " "));
    EXPECT_EQ(r.exit_code, 2);
    EXPECT_TRUE(absl::StartsWith(r.err, "fp8ctl: ")) << r.err;
    EXPECT_TRUE(absl::StrContains(r.err, c.names)) << r.err;
    EXPECT_TRUE(absl::StrContains(r.err, c.help_hint)) << r.err;
    EXPECT_LE(Lines(r.err).size(), 2u) << "no usage of every command:\n" << r.err;
    EXPECT_TRUE(r.out.empty()) << r.out;
  }
}

TEST(Fp8ctlCommandLine, UnavailableDaemonGetsAHintWithTheAddress) {
  const std::string addr = absl::StrCat("127.0.0.1:", PickFreePort());
  auto r = Ctl({"--addr", addr, "jobs"});
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_TRUE(absl::StrContains(r.err, "UNAVAILABLE")) << r.err;
  EXPECT_TRUE(absl::StrContains(r.err, "is fp8d running at " + addr + "?")) << r.err;
}

// A TCP port that accepts connections (the kernel does) and never answers: a gRPC call to it
// waits, so a test can interrupt fp8ctl in the middle of one.
class SilentListener {
 public:
  SilentListener() {
    fd_ = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    bind(fd_, reinterpret_cast<sockaddr*>(&addr), sizeof(addr));
    socklen_t len = sizeof(addr);
    getsockname(fd_, reinterpret_cast<sockaddr*>(&addr), &len);
    listen(fd_, 8);
    port_ = ntohs(addr.sin_port);
  }
  ~SilentListener() { close(fd_); }
  std::string address() const { return absl::StrCat("127.0.0.1:", port_); }

 private:
  int fd_ = -1;
  int port_ = 0;
};

// Interrupts `fp8ctl ARGS` once its handler is installed; returns exit code and stderr.
std::pair<int, std::string> Interrupt(const std::vector<std::string>& args) {
  std::vector<std::string> argv = {BinaryPath("fp8ctl")};
  argv.insert(argv.end(), args.begin(), args.end());
  ChildProcess ctl(argv);
  EXPECT_TRUE(WaitFor([&] { return ctl.Catches(SIGINT); }, absl::Seconds(30)));
  ctl.Signal(SIGINT);
  const int code = ctl.Wait(absl::Seconds(30));
  return {code, ctl.output()};
}

TEST(Fp8ctlCommandLine, CtrlCPrintsWhatTheInterruptionLeaves) {
  SilentListener silent;
  const std::string out = MakeTempDir("ctrl-c") + "/model.safetensors";
  auto [pull_code, pull_err] =
      Interrupt({"--addr", silent.address(), "checkpoint", "pull", "demo-1", "--out", out});
  EXPECT_EQ(pull_code, 130);
  EXPECT_TRUE(absl::StrContains(pull_err, "pull interrupted: what arrived is kept in " + out +
                                              ".partial; run the same command again to resume"))
      << pull_err;
  auto [watch_code, watch_err] = Interrupt({"--addr", silent.address(), "watch", "demo-1"});
  EXPECT_EQ(watch_code, 130);
  EXPECT_TRUE(absl::StrContains(watch_err, "detached (the job keeps running)")) << watch_err;
}

class Fp8ctlCommands : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    fixture_ = new DaemonFixture(StartDaemonWithCorpus("ctl-commands"));
    JobFileOptions options;
    options.name = "cmd";
    options.steps = 20;
    options.recipe = "delayed";
    options.checkpoint_interval = 10;
    WriteFile(fixture_->root + "/job.yaml", JobYaml(options) + "eval_interval: 10\n");
  }
  static void TearDownTestSuite() {
    delete fixture_;
    fixture_ = nullptr;
  }
  static CommandResult Run(const std::vector<std::string>& args) {
    return fixture_->daemon->Fp8ctl(args);
  }
  // Submits job.yaml with `sets` and returns the job's name.
  static std::string Submit(const std::vector<std::string>& sets) {
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
  static v1::Job WaitUntil(const std::string& job, v1::JobState state) {
    v1::Job last;
    EXPECT_TRUE(WaitForJob(*fixture_->client, job,
                           [&](const v1::Job& j) { return j.state() == state; },
                           absl::Seconds(120), &last))
        << last.DebugString();
    return last;
  }
  // The job's metric records, replayed.
  static std::vector<v1::MetricRecord> Records(const std::string& job) {
    std::vector<v1::MetricRecord> out;
    v1::StreamMetricsRequest request;
    request.set_name(job);
    EXPECT_TRUE(fixture_->client->StreamMetrics(request, [&](const v1::MetricRecord& r) {
      out.push_back(r);
      return true;
    }).ok());
    return out;
  }
  // Pauses a running job after its second step and waits until the trainer has stopped at a step
  // boundary; returns that step.
  static int64_t PauseAtBoundary(const std::string& job) {
    EXPECT_TRUE(WaitForJob(*fixture_->client, job, [](const v1::Job& j) { return j.step() >= 2; },
                           absl::Seconds(120)));
    EXPECT_TRUE(fixture_->client->PauseJob(job).ok());
    int64_t step = -1;
    EXPECT_TRUE(WaitFor(
        [&] {
          for (const auto& r : Records(job)) {
            if (r.has_event() && r.event().kind() == "paused") step = r.event().step();
          }
          return step >= 0;
        },
        absl::Seconds(60)));
    return step;
  }
  static DaemonFixture* fixture_;
};
DaemonFixture* Fp8ctlCommands::fixture_ = nullptr;

TEST_F(Fp8ctlCommands, ListsAreOneJsonArrayAndJobsShowStartAndElapsedTime) {
  const std::string job = Submit({"steps=4"});
  WaitUntil(job, v1::SUCCEEDED);
  auto json = Run({"--json", "jobs"});
  ASSERT_EQ(json.exit_code, 0) << json.err;
  ASSERT_EQ(Lines(json.out).size(), 1u) << json.out;
  v1::ListJobsResponse jobs;
  ASSERT_TRUE(google::protobuf::util::JsonStringToMessage(
                  absl::StrCat("{\"jobs\":", json.out, "}"), &jobs).ok()) << json.out;
  ASSERT_GE(jobs.jobs_size(), 1);
  EXPECT_EQ(jobs.jobs(jobs.jobs_size() - 1).name(), job);

  const std::regex time("20[0-9]{2}-[0-9]{2}-[0-9]{2} [0-9]{2}:[0-9]{2}:[0-9]{2}");
  auto table = Run({"jobs"});
  ASSERT_EQ(table.exit_code, 0) << table.err;
  EXPECT_TRUE(absl::StrContains(Lines(table.out)[0], "STARTED")) << table.out;
  EXPECT_TRUE(absl::StrContains(Lines(table.out)[0], "ELAPSED")) << table.out;
  std::string row;
  for (const auto& line : Lines(table.out)) {
    if (absl::StartsWith(line, job + " ")) row = line;
  }
  EXPECT_TRUE(std::regex_search(row, time)) << row;
  EXPECT_TRUE(std::regex_search(row, std::regex(" [0-9]+:[0-9]{2} "))) << "elapsed: " << row;

  auto show = Run({"show", job});
  ASSERT_EQ(show.exit_code, 0) << show.err;
  EXPECT_TRUE(std::regex_search(show.out, std::regex("started 20[0-9-]+ [0-9:]+"))) << show.out;
  EXPECT_TRUE(std::regex_search(show.out, std::regex("elapsed [0-9]+:[0-9]{2}"))) << show.out;

  auto ids = Run({"jobs", "-q"});
  EXPECT_TRUE(absl::StrContains(ids.out, job.substr(5) + "\n")) << ids.out;
  EXPECT_FALSE(absl::StrContains(ids.out, "STATE")) << ids.out;
}

TEST_F(Fp8ctlCommands, BashCompletionCompletesCommandsOptionsAndJobIds) {
  const std::string job = Submit({"steps=2"});
  WaitUntil(job, v1::SUCCEEDED);
  auto script = Run({"completion", "bash"});
  ASSERT_EQ(script.exit_code, 0) << script.err;
  const std::string file = fixture_->root + "/fp8ctl.bash";
  WriteFile(file, script.out);
  // COMPREPLY for the words typed so far, the last one being completed.
  const auto complete = [&](const std::string& words) {
    const std::string program = absl::StrCat(
        "source ", file, "; COMP_WORDS=(", BinaryPath("fp8ctl"), " ", words,
        "); COMP_CWORD=$((${#COMP_WORDS[@]} - 1)); _fp8ctl; echo \"${COMPREPLY[*]}\"");
    auto r = RunProcess({"/bin/bash", "-c", program}, absl::Seconds(30),
                        {"FP8D_ADDR=" + fixture_->daemon->address()});
    EXPECT_EQ(r.exit_code, 0) << r.err;
    return std::string(absl::StripTrailingAsciiWhitespace(r.out));
  };
  EXPECT_EQ(complete("su"), "submit");
  EXPECT_EQ(complete("checkpoint p"), "pull");
  EXPECT_EQ(complete("recipe s"), "set");
  EXPECT_EQ(complete("amax " + job.substr(5) + " --fo"), "--follow");
  EXPECT_TRUE(absl::StrContains(complete("logs ''"), job.substr(5))) << "job ids from the daemon";
}

TEST_F(Fp8ctlCommands, LogsPrintTheJobsEventsAndFollowUntilItEnds) {
  const std::string job = Submit({"steps=100000"});
  WaitUntil(job, v1::RUNNING);
  const int64_t paused = PauseAtBoundary(job);
  ChildProcess follow({BinaryPath("fp8ctl"), "--addr", fixture_->daemon->address(), "logs", job,
                       "-f"});
  ASSERT_TRUE(WaitFor([&] { return absl::StrContains(follow.output(), "paused"); },
                      absl::Seconds(60)))
      << follow.output();
  EXPECT_EQ(follow.Wait(absl::Milliseconds(200)), -1) << "still following: " << follow.output();
  ASSERT_EQ(Run({"cancel", job}).exit_code, 0);
  ASSERT_EQ(follow.Wait(absl::Seconds(60)), 0) << follow.output();
  const std::string out = follow.output();
  EXPECT_TRUE(std::regex_search(out, std::regex("step 0 +INFO +started: 100000 steps"))) << out;
  EXPECT_TRUE(std::regex_search(out, std::regex(absl::StrCat("step ", paused,
                                                             " +INFO +paused"))))
      << out;
  EXPECT_TRUE(std::regex_search(out, std::regex("WARN +cancelled"))) << out;
  EXPECT_FALSE(absl::StrContains(out, "loss")) << "events only, no step lines";

  auto replay = Run({"logs", job, "--from-step", std::to_string(paused)});
  ASSERT_EQ(replay.exit_code, 0) << replay.err;
  EXPECT_FALSE(absl::StrContains(replay.out, "started")) << replay.out;
  EXPECT_TRUE(absl::StrContains(replay.out, "cancelled")) << replay.out;
}

TEST_F(Fp8ctlCommands, AmaxFollowShowsTheTableLiveAndStreamsCanStartFromNow) {
  const std::string job = Submit({"steps=100000"});
  WaitUntil(job, v1::RUNNING);
  const int64_t paused = PauseAtBoundary(job);
  ASSERT_GE(paused, 1);
  const std::string addr = fixture_->daemon->address();
  ChildProcess table({BinaryPath("fp8ctl"), "--addr", addr, "amax", job, "--follow"});
  ChildProcess amax_now({BinaryPath("fp8ctl"), "--addr", addr, "amax", job, "--follow",
                         "--from-step", "now"});
  ChildProcess watch_now({BinaryPath("fp8ctl"), "--addr", addr, "watch", job, "--from-step",
                          "now"});
  // The table of the step the job is paused at shows while the job has not ended.
  const std::string paused_table = absl::StrCat("step ", paused, ", recipe v1\n");
  ASSERT_TRUE(WaitFor([&] { return absl::StrContains(table.output(), paused_table); },
                      absl::Seconds(60)))
      << table.output();
  EXPECT_TRUE(absl::StrContains(table.output(), "LAYER")) << table.output();
  EXPECT_EQ(WaitForJob(*fixture_->client, job,
                       [](const v1::Job& j) { return j.state() == v1::PAUSED; }, absl::Seconds(5)),
            true);
  // Three more steps, then the end.
  ASSERT_TRUE(fixture_->client->ResumeJob(job).ok());
  ASSERT_TRUE(WaitForJob(*fixture_->client, job,
                         [&](const v1::Job& j) { return j.step() >= paused + 3; },
                         absl::Seconds(60)));
  ASSERT_EQ(Run({"cancel", job}).exit_code, 0);
  for (ChildProcess* p : {&table, &amax_now, &watch_now}) {
    EXPECT_EQ(p->Wait(absl::Seconds(60)), 0) << p->output();
  }
  EXPECT_TRUE(absl::StrContains(table.output(), "step 1, recipe v1\n")) << "from the start";
  EXPECT_TRUE(absl::StrContains(table.output(), absl::StrCat("step ", paused + 3, ", recipe v1")));
  // "now": only steps after the one the job was at.
  const std::string now = amax_now.output();
  EXPECT_TRUE(absl::StrContains(now, absl::StrCat("step ", paused + 1, ", recipe v1\n"))) << now;
  for (int64_t s = 1; s <= paused; ++s) {
    EXPECT_FALSE(absl::StrContains(now, absl::StrCat("step ", s, ", recipe"))) << s << "\n" << now;
  }
  const std::string watched = watch_now.output();
  EXPECT_TRUE(absl::StrContains(watched, absl::StrCat("step ", paused + 1, "/100000 loss")))
      << watched;
  EXPECT_FALSE(absl::StrContains(watched, absl::StrCat("step ", paused, "/100000 loss")))
      << watched;
}

TEST_F(Fp8ctlCommands, CompareShowsRunsSideBySide) {
  const std::string bf16 = Submit({"recipe.name=bf16"});
  WaitUntil(bf16, v1::SUCCEEDED);
  const std::string fp8 = Submit({});
  WaitUntil(fp8, v1::SUCCEEDED);
  auto table = Run({"compare", bf16, fp8.substr(5)});
  ASSERT_EQ(table.exit_code, 0) << table.err;
  const auto lines = Lines(table.out);
  ASSERT_GE(lines.size(), 9u) << table.out;
  EXPECT_TRUE(absl::StrContains(lines[0], bf16.substr(5)) &&
              absl::StrContains(lines[0], fp8.substr(5)))
      << table.out;
  EXPECT_TRUE(std::regex_search(table.out, std::regex("final eval loss +[0-9.]+ @20 +[0-9.]+ @20")))
      << table.out;
  EXPECT_TRUE(std::regex_search(table.out, std::regex("recipes +bf16 v1 +delayed v1")))
      << table.out;
  EXPECT_TRUE(absl::StrContains(table.out, "tokens/s (median)")) << table.out;

  auto json = Run({"--json", "compare", bf16, fp8});
  ASSERT_EQ(json.exit_code, 0) << json.err;
  ASSERT_EQ(Lines(json.out).size(), 1u);
  google::protobuf::Value runs;
  ASSERT_TRUE(google::protobuf::util::JsonStringToMessage(json.out, &runs).ok()) << json.out;
  ASSERT_EQ(runs.list_value().values_size(), 2);
  float last_eval = 0;
  for (const auto& r : Records(fp8)) {
    if (r.has_eval()) last_eval = r.eval().loss();
  }
  const auto& fields = runs.list_value().values(1).struct_value().fields();
  EXPECT_EQ(fields.at("job").string_value(), fp8);
  EXPECT_EQ(static_cast<float>(fields.at("final_eval_loss").number_value()), last_eval);
  EXPECT_EQ(fields.at("recipes").list_value().values(0).struct_value().fields().at("name")
                .string_value(),
            "delayed");
  EXPECT_EQ(Run({"compare", bf16}).exit_code, 2) << "two or more jobs";
}

TEST_F(Fp8ctlCommands, DeleteRemovesAnEndedJobWithItsFilesOnly) {
  const std::string job = Submit({"steps=100000"});
  WaitUntil(job, v1::RUNNING);
  auto running = Run({"delete", job});
  EXPECT_EQ(running.exit_code, 1);
  EXPECT_TRUE(absl::StrContains(running.err, "FAILED_PRECONDITION")) << running.err;
  EXPECT_TRUE(absl::StrContains(running.err, "cancel it first")) << running.err;
  ASSERT_EQ(Run({"cancel", job}).exit_code, 0);
  WaitUntil(job, v1::CANCELLED);
  const std::string dir = fixture_->root + "/state/jobs/" + job.substr(5);
  ASSERT_TRUE(fs::exists(dir + "/metrics.log"));
  auto deleted = Run({"delete", job});
  ASSERT_EQ(deleted.exit_code, 0) << deleted.err;
  EXPECT_TRUE(std::regex_search(deleted.out,
                                std::regex("deleted " + job + " \\([0-9.]+ MiB of logs and "
                                           "checkpoints freed\\)")))
      << deleted.out;
  EXPECT_FALSE(fs::exists(dir));
  auto show = Run({"show", job});
  EXPECT_EQ(show.exit_code, 1);
  EXPECT_TRUE(absl::StrContains(show.err, "NOT_FOUND")) << show.err;
  EXPECT_FALSE(absl::StrContains(Run({"jobs"}).out, job + " ")) << "gone from the list";
  EXPECT_EQ(Run({"delete", job}).exit_code, 1);
}

TEST_F(Fp8ctlCommands, ContinueGoesOnFromACheckpointOfAnEndedJob) {
  const std::string job = Submit({});
  WaitUntil(job, v1::SUCCEEDED);
  auto no_steps = Run({"continue", job});
  EXPECT_EQ(no_steps.exit_code, 2);
  EXPECT_TRUE(absl::StrContains(no_steps.err, "--steps")) << no_steps.err;

  // Further than the job went: 20 -> 30 steps from its final checkpoint.
  auto longer = Run({"continue", job, "--steps", "30", "--watch"});
  ASSERT_EQ(longer.exit_code, 0) << longer.err;
  std::smatch m;
  ASSERT_TRUE(std::regex_search(longer.out, m, std::regex("submitted (jobs/[^ ]+) \\(QUEUED\\), "
                                                          "continuing from ([^ \n]+)")))
      << longer.out;
  const std::string next = m[1];
  EXPECT_EQ(m[2], job + "/checkpoints/step-00000020");
  EXPECT_TRUE(absl::StrContains(longer.out, next + " SUCCEEDED")) << longer.out;
  int64_t first_step = 0, last_step = 0;
  for (const auto& r : Records(next)) {
    if (!r.has_step()) continue;
    if (first_step == 0) first_step = r.step().step();
    last_step = r.step().step();
  }
  EXPECT_EQ(first_step, 21);
  EXPECT_EQ(last_step, 30);
  auto show = Run({"show", next});
  EXPECT_TRUE(absl::StrContains(show.out, "continued from " + job + "/checkpoints/step-00000020"))
      << show.out;

  // From an earlier checkpoint with the same steps: the same losses as the original run.
  auto again = Run({"--json", "continue", job, "step-00000010"});
  ASSERT_EQ(again.exit_code, 0) << again.err;
  v1::Job continued;
  ASSERT_TRUE(google::protobuf::util::JsonStringToMessage(again.out, &continued).ok());
  WaitUntil(continued.name(), v1::SUCCEEDED);
  std::map<int64_t, float> original, resumed;
  for (const auto& r : Records(job)) {
    if (r.has_step()) original[r.step().step()] = r.step().loss();
  }
  for (const auto& r : Records(continued.name())) {
    if (r.has_step()) resumed[r.step().step()] = r.step().loss();
  }
  ASSERT_EQ(resumed.size(), 10u);
  for (const auto& [step, loss] : resumed) EXPECT_EQ(loss, original.at(step)) << step;

  // Deleting the original leaves the continued jobs' own checkpoints.
  ASSERT_EQ(Run({"delete", job}).exit_code, 0);
  auto list = Run({"checkpoint", "list", next});
  EXPECT_TRUE(absl::StrContains(list.out, next + "/checkpoints/step-00000030")) << list.out;
  auto bad = Run({"continue", continued.name(), "step-00000099", "--steps", "40"});
  EXPECT_EQ(bad.exit_code, 1);
  EXPECT_TRUE(absl::StrContains(bad.err, "NOT_FOUND")) << bad.err;
}

TEST_F(Fp8ctlCommands, CheckpointPullRefusesToOverwriteWithoutForce) {
  const std::string job = Submit({"steps=10"});
  WaitUntil(job, v1::SUCCEEDED);
  const std::string out = fixture_->root + "/pulled.safetensors";
  WriteFile(out, "precious");
  auto refused = Run({"checkpoint", "pull", job, "--out", out});
  EXPECT_EQ(refused.exit_code, 1);
  EXPECT_TRUE(absl::StrContains(refused.err, "`" + out + "` exists; pass --force to overwrite it"))
      << refused.err;
  EXPECT_EQ(ReadFile(out), "precious");
  auto forced = Run({"checkpoint", "pull", job, "--out", out, "--force"});
  ASSERT_EQ(forced.exit_code, 0) << forced.err;
  EXPECT_TRUE(absl::StrContains(forced.out, "verified")) << forced.out;
  EXPECT_GT(ReadFile(out).size(), 1000u);
}

}  // namespace
}  // namespace fp8d::itest
