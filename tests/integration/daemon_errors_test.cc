// Every kind of bad input gets its status code and a message naming the field; authentication
// and the loopback rule hold.
#include <filesystem>

#include "absl/strings/match.h"
#include "gtest/gtest.h"
#include "tests/integration/daemon_harness.h"

namespace fp8d::itest {
namespace {
namespace v1 = fp8d::v1;
using absl::StatusCode;

#define EXPECT_STATUS(expr, expected_code, needle)                                 \
  do {                                                                             \
    const absl::Status status_ = (expr).status();                                  \
    EXPECT_EQ(status_.code(), expected_code) << status_;                           \
    EXPECT_TRUE(absl::StrContains(status_.message(), needle))                      \
        << "message `" << status_.message() << "` should mention `" << needle << "`"; \
  } while (0)

class DaemonErrors : public ::testing::Test {
 protected:
  static void SetUpTestSuite() { fixture_ = new DaemonFixture(StartDaemonWithCorpus("errors")); }
  static void TearDownTestSuite() {
    delete fixture_;
    fixture_ = nullptr;
  }
  client::TrainerClient& client() { return *fixture_->client; }
  static DaemonFixture* fixture_;
};
DaemonFixture* DaemonErrors::fixture_ = nullptr;

TEST_F(DaemonErrors, BadSpecsAreInvalidArgumentNamingTheField) {
  EXPECT_STATUS(client().SubmitJobText("model: {preset: tiny, n_layers: 2}\n", {}),
                StatusCode::kInvalidArgument, "n_layers");
  EXPECT_STATUS(client().SubmitJobText(JobYaml({}), {"recipe.name=fp4"}),
                StatusCode::kInvalidArgument, "recipe.name");
  EXPECT_STATUS(client().SubmitJobText(JobYaml({}), {"batch_size=0"}),
                StatusCode::kInvalidArgument, "batch_size");
  EXPECT_STATUS(client().SubmitJob(v1::SubmitJobRequest()), StatusCode::kInvalidArgument,
                "spec");
}

TEST_F(DaemonErrors, BadNamesRegexAndPagingAreInvalidArgument) {
  EXPECT_STATUS(client().GetJob("jobs/../etc"), StatusCode::kInvalidArgument, "name");
  EXPECT_STATUS(client().GetJob("jobs/.hidden"), StatusCode::kInvalidArgument, "job id");
  v1::StreamAmaxRequest amax;
  auto job = client().SubmitJobText(JobYaml({}), {"steps=2"});
  ASSERT_TRUE(job.ok()) << job.status();
  amax.set_name(job->name());
  amax.set_layer_regex("layers\\.[0-");
  absl::Status s = client().StreamAmax(amax, [](const v1::AmaxRecord&) { return true; });
  EXPECT_EQ(s.code(), StatusCode::kInvalidArgument) << s;
  EXPECT_TRUE(absl::StrContains(s.message(), "layer_regex")) << s;
  EXPECT_STATUS(client().ListJobs(-1, ""), StatusCode::kInvalidArgument, "page_size");
  EXPECT_STATUS(client().ListJobs(10, "not-a-token"), StatusCode::kInvalidArgument, "page_token");
}

TEST_F(DaemonErrors, UnknownJobsAndCheckpointsAreNotFound) {
  EXPECT_STATUS(client().GetJob("jobs/nope-1"), StatusCode::kNotFound, "jobs/nope-1");
  EXPECT_STATUS(client().ListCheckpoints("jobs/nope-1"), StatusCode::kNotFound, "jobs/nope-1");
  auto job = client().SubmitJobText(JobYaml({}), {"steps=2"});
  ASSERT_TRUE(job.ok());
  EXPECT_STATUS(client().PullCheckpoint(job->name() + "/checkpoints/step-99999999",
                                        fixture_->root + "/x.safetensors"),
                StatusCode::kNotFound, "step-99999999");
}

TEST_F(DaemonErrors, PullOffsetBeyondTheFileIsOutOfRange) {
  auto job = client().SubmitJobText(JobYaml({}), {"steps=3"});
  ASSERT_TRUE(job.ok());
  ASSERT_TRUE(WaitForJob(client(), job->name(),
                         [](const v1::Job& j) { return j.state() == v1::SUCCEEDED; },
                         absl::Seconds(60)));
  auto ctx = client().NewContext(10000);
  v1::PullCheckpointRequest request;
  request.set_name(job->name());
  request.set_offset(int64_t{1} << 40);
  auto reader = client().stub().PullCheckpoint(ctx.get(), request);
  v1::CheckpointChunk chunk;
  while (reader->Read(&chunk)) {
  }
  grpc::Status s = reader->Finish();
  EXPECT_EQ(s.error_code(), grpc::StatusCode::OUT_OF_RANGE) << s.error_message();
  EXPECT_TRUE(absl::StrContains(s.error_message(), "offset")) << s.error_message();
}

TEST_F(DaemonErrors, DataOutsideTheDataRootIsRefused) {
  EXPECT_STATUS(client().SubmitJobText(JobYaml({}), {"data.train=/etc/passwd"}),
                StatusCode::kPermissionDenied, "data.train");
  EXPECT_STATUS(client().SubmitJobText(JobYaml({}), {"data.train=../state/x.txt"}),
                StatusCode::kPermissionDenied, "data.train");
  EXPECT_STATUS(client().SubmitJobText(JobYaml({}), {"data.train=missing.txt"}),
                StatusCode::kNotFound, "data.train");
}

TEST_F(DaemonErrors, WrongStateIsFailedPrecondition) {
  auto job = client().SubmitJobText(JobYaml({}), {"steps=2"});
  ASSERT_TRUE(job.ok());
  ASSERT_TRUE(WaitForJob(client(), job->name(),
                         [](const v1::Job& j) { return j.state() == v1::SUCCEEDED; },
                         absl::Seconds(60)));
  EXPECT_STATUS(client().ResumeJob(job->name()), StatusCode::kFailedPrecondition, "SUCCEEDED");
  EXPECT_STATUS(client().PauseJob(job->name()), StatusCode::kFailedPrecondition, "SUCCEEDED");
  EXPECT_STATUS(client().CancelJob(job->name()), StatusCode::kFailedPrecondition, "SUCCEEDED");
  EXPECT_STATUS(client().SaveCheckpoint(job->name()), StatusCode::kFailedPrecondition, "SUCCEEDED");
  v1::UpdateRecipeRequest update;
  update.set_name(job->name());
  update.mutable_recipe()->set_name("delayed");
  EXPECT_STATUS(client().UpdateRecipe(update), StatusCode::kFailedPrecondition, "SUCCEEDED");
}

TEST_F(DaemonErrors, RecipeTheDeviceLacksIsFailedPrecondition) {
  auto info = client().GetServerInfo();
  ASSERT_TRUE(info.ok());
  if (info->unsupported_recipes().empty()) {
    GTEST_SKIP() << "the " << info->engine() << " engine supports every recipe";
  }
  const std::string& entry = info->unsupported_recipes(0);
  const std::string recipe = entry.substr(0, entry.find(':'));
  EXPECT_STATUS(client().SubmitJobText(JobYaml({}), {"recipe.name=" + recipe}),
                StatusCode::kFailedPrecondition, recipe);
}

TEST_F(DaemonErrors, ModelThatCannotFitIsResourceExhaustedBeforeAllocating) {
  auto info = client().GetServerInfo();
  ASSERT_TRUE(info.ok());
  ASSERT_GT(info->device_memory_bytes(), 0);
  // 3b at 64 layers: far more than the device holds. Refused at submit, nothing allocated.
  EXPECT_STATUS(client().SubmitJobText(JobYaml({}), {"model.preset=3b", "model.n_layer=64",
                                                     "seq_len=2048", "batch_size=64"}),
                StatusCode::kResourceExhausted, "will not fit");
}

TEST_F(DaemonErrors, RequestIdMakesSubmitIdempotentAndListingPages) {
  v1::SubmitJobRequest request;
  request.set_spec_text(JobYaml({}));
  request.add_set("steps=2");
  request.set_request_id("retry-42");
  auto first = client().SubmitJob(request);
  auto second = client().SubmitJob(request);
  ASSERT_TRUE(first.ok() && second.ok());
  EXPECT_EQ(first->name(), second->name());

  auto all = client().ListAllJobs();
  ASSERT_TRUE(all.ok());
  std::vector<std::string> paged;
  std::string token;
  int pages = 0;
  do {
    auto page = client().ListJobs(1, token);
    ASSERT_TRUE(page.ok()) << page.status();
    ASSERT_LE(page->jobs_size(), 1);
    for (const auto& j : page->jobs()) paged.push_back(j.name());
    token = page->next_page_token();
  } while (!token.empty() && ++pages < 1000);
  ASSERT_EQ(paged.size(), all->size());
  for (size_t i = 0; i < paged.size(); ++i) EXPECT_EQ(paged[i], (*all)[i].name());
}

TEST(DaemonQueue, FullQueueIsResourceExhaustedAndJobsRunInOrder) {
  auto f = StartDaemonWithCorpus("queue", {"--max-queued", "2"});
  JobFileOptions slow;
  slow.steps = 100000;
  auto running = f.client->SubmitJobText(JobYaml(slow), {});
  ASSERT_TRUE(running.ok());
  ASSERT_TRUE(WaitForJob(*f.client, running->name(),
                         [](const v1::Job& j) { return j.state() == v1::RUNNING; },
                         absl::Seconds(60)));
  auto a = f.client->SubmitJobText(JobYaml({}), {"steps=2", "name=a"});
  auto b = f.client->SubmitJobText(JobYaml({}), {"steps=2", "name=b"});
  ASSERT_TRUE(a.ok() && b.ok());
  EXPECT_EQ(a->state(), v1::QUEUED);
  EXPECT_STATUS(f.client->SubmitJobText(JobYaml({}), {"steps=2"}), StatusCode::kResourceExhausted,
                "queue is full");
  auto info = f.client->GetServerInfo();
  EXPECT_EQ(info->running_job(), running->name());
  EXPECT_EQ(info->queued_jobs(), 2);
  // A queued job is not pausable; cancelling one frees its place.
  EXPECT_STATUS(f.client->PauseJob(a->name()), StatusCode::kFailedPrecondition, "QUEUED");
  ASSERT_TRUE(f.client->CancelJob(running->name()).ok());
  v1::Job ja, jb;
  ASSERT_TRUE(WaitForJob(*f.client, b->name(),
                         [](const v1::Job& j) { return j.state() == v1::SUCCEEDED; },
                         absl::Seconds(60), &jb));
  ja = *f.client->GetJob(a->name());
  EXPECT_EQ(ja.state(), v1::SUCCEEDED);
  EXPECT_LE(ja.end_unix_micros(), jb.start_unix_micros()) << "one job at a time, in order";
}

TEST(DaemonAuth, WrongOrMissingTokenIsUnauthenticated) {
  const std::string root = MakeTempDir("auth");
  std::filesystem::create_directories(root + "/data");
  WriteFile(root + "/data/corpus.txt", CorpusText(50000));
  const std::string token = "s3cret-token-0123456789";
  WritePrivateFile(root + "/token", token + "\n");
  Daemon daemon(root + "/state", root + "/data", {"--token-file", root + "/token"});
  ASSERT_TRUE(daemon.Start(token).ok()) << daemon.log();

  EXPECT_STATUS(daemon.Client()->GetServerInfo(), StatusCode::kUnauthenticated, "authorization");
  EXPECT_STATUS(daemon.Client("s3cret-token-0123456788")->GetServerInfo(),
                StatusCode::kUnauthenticated, "invalid bearer token");
  EXPECT_STATUS(daemon.Client("short")->ListAllJobs(), StatusCode::kUnauthenticated, "token");
  v1::StreamMetricsRequest stream;
  stream.set_name("jobs/x-1");
  EXPECT_EQ(daemon.Client("wrong-token-wrong-token")
                ->StreamMetrics(stream, [](const v1::MetricRecord&) { return true; })
                .code(),
            StatusCode::kUnauthenticated);
  auto ok = daemon.Client(token)->SubmitJobText(JobYaml({}), {"steps=2"});
  EXPECT_TRUE(ok.ok()) << ok.status();
}

TEST(DaemonAuth, RefusesNonLoopbackWithoutTokenOrTls) {
  const std::string root = MakeTempDir("nonloopback");
  auto result = RunProcess({BinaryPath("fp8d"), "--listen", "0.0.0.0:" + std::to_string(PickFreePort()),
                            "--state-dir", root + "/state", "--engine", "cpu"},
                           absl::Seconds(20));
  EXPECT_EQ(result.exit_code, 2);
  EXPECT_TRUE(absl::StrContains(result.err, "refusing to listen")) << result.err;
}

TEST(DaemonAuth, TlsListenerServesTlsClientsOnly) {
  constexpr char kOpenssl[] = "/usr/bin/openssl";
  if (!std::filesystem::exists(kOpenssl)) GTEST_SKIP() << "needs " << kOpenssl << " to make a certificate";
  const std::string root = MakeTempDir("tls");
  std::filesystem::create_directories(root + "/data");
  WriteFile(root + "/data/corpus.txt", CorpusText(50000));
  auto cert = RunProcess({kOpenssl, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
                          "-subj", "/CN=localhost", "-addext", "subjectAltName=IP:127.0.0.1",
                          "-keyout", root + "/key.pem", "-out", root + "/cert.pem"},
                         absl::Seconds(60));
  ASSERT_EQ(cert.exit_code, 0) << cert.err;
  Daemon daemon(root + "/state", root + "/data",
                {"--tls-cert", root + "/cert.pem", "--tls-key", root + "/key.pem"});
  daemon.UseTls(root + "/cert.pem");
  ASSERT_TRUE(daemon.Start().ok()) << daemon.log();
  auto info = daemon.Client()->GetServerInfo();
  EXPECT_TRUE(info.ok()) << info.status();
  auto ctl = daemon.Fp8ctl({"--tls-ca", root + "/cert.pem", "info"});
  EXPECT_EQ(ctl.exit_code, 0) << ctl.err;
  auto plain = daemon.Fp8ctl({"info"}, absl::Seconds(30));
  EXPECT_EQ(plain.exit_code, 1);
  EXPECT_TRUE(absl::StrContains(plain.err, "UNAVAILABLE")) << plain.err;
}

}  // namespace
}  // namespace fp8d::itest
