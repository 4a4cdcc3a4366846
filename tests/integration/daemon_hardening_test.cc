// What a hostile or broken client, a second daemon, or a damaged state dir can do to fp8d, one
// test per defect: each failed before its fix.
#include <sys/stat.h>

#include <atomic>
#include <filesystem>
#include <fstream>
#include <string>
#include <thread>
#include <vector>

#include <grpcpp/generic/generic_stub.h>
#include <grpcpp/grpcpp.h>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "core/metric_log.h"
#include "google/protobuf/util/json_util.h"
#include "server/stream_limits.h"
#include "fp8d/v1/trainer.grpc.pb.h"
#include "gtest/gtest.h"
#include "tests/integration/daemon_harness.h"

namespace fp8d::itest {
namespace {
namespace fs = std::filesystem;
namespace v1 = fp8d::v1;
using absl::StatusCode;

#define EXPECT_STATUS(expr, expected_code, needle)                                   \
  do {                                                                               \
    const absl::Status status_ = (expr).status();                                    \
    EXPECT_EQ(status_.code(), expected_code) << status_;                             \
    EXPECT_TRUE(absl::StrContains(status_.message(), needle))                        \
        << "message `" << status_.message() << "` should mention `" << needle << "`"; \
  } while (0)

int Mode(const std::string& path) {
  struct stat st;
  return ::stat(path.c_str(), &st) == 0 ? static_cast<int>(st.st_mode & 07777) : -1;
}

// A channel of its own (no subchannel shared with other channels): one more client connection.
std::unique_ptr<v1::Trainer::Stub> OwnConnection(const Daemon& daemon) {
  grpc::ChannelArguments args;
  args.SetInt(GRPC_ARG_USE_LOCAL_SUBCHANNEL_POOL, 1);
  return v1::Trainer::NewStub(
      grpc::CreateCustomChannel(daemon.address(), grpc::InsecureChannelCredentials(), args));
}

v1::Job SubmitAndFinish(DaemonFixture& f, JobFileOptions options) {
  auto job = f.client->SubmitJobText(JobYaml(options), {});
  EXPECT_TRUE(job.ok()) << job.status();
  if (!job.ok()) return {};
  v1::Job done;
  EXPECT_TRUE(WaitForJob(*f.client, job->name(),
                         [](const v1::Job& j) { return j.state() == v1::SUCCEEDED; },
                         absl::Seconds(120), &done))
      << done.DebugString();
  return done;
}

std::string JobDir(const DaemonFixture& f, const v1::Job& job) {
  return f.root + "/state/jobs/" + job.name().substr(5);
}

void FlipByte(const std::string& path, int64_t offset_from_end) {
  std::fstream file(path, std::ios::binary | std::ios::in | std::ios::out);
  file.seekg(-offset_from_end, std::ios::end);
  char c;
  file.get(c);
  file.seekp(-offset_from_end, std::ios::end);
  file.put(static_cast<char>(c ^ 0x10));
}

TEST(DaemonSecurity, TokenFileOthersCanReadIsRefusedNamingItsMode) {
  const std::string root = MakeTempDir("tokenmode");
  WriteFile(root + "/token", "a-long-enough-token-0123456789\n");
  fs::permissions(root + "/token", fs::perms(0644), fs::perm_options::replace);
  auto result = RunProcess({BinaryPath("fp8d"), "--listen",
                            "127.0.0.1:" + std::to_string(PickFreePort()), "--state-dir",
                            root + "/state", "--token-file", root + "/token", "--engine", "cpu"},
                           absl::Seconds(20));
  EXPECT_EQ(result.exit_code, 2);
  EXPECT_TRUE(absl::StrContains(result.err, "mode 0644")) << result.err;
  EXPECT_TRUE(absl::StrContains(result.err, "chmod 600")) << result.err;
}

TEST(DaemonSecurity, TlsWithoutClientCertificatesNeedsATokenBeyondLoopback) {
  constexpr char kOpenssl[] = "/usr/bin/openssl";
  if (!fs::exists(kOpenssl)) GTEST_SKIP() << "needs " << kOpenssl << " to make a certificate";
  const std::string root = MakeTempDir("tlsclient");
  auto cert = RunProcess({kOpenssl, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
                          "-subj", "/CN=localhost", "-addext", "subjectAltName=IP:127.0.0.1",
                          "-keyout", root + "/key.pem", "-out", root + "/cert.pem"},
                         absl::Seconds(60));
  ASSERT_EQ(cert.exit_code, 0) << cert.err;
  const std::vector<std::string> tls = {"--tls-cert", root + "/cert.pem", "--tls-key",
                                        root + "/key.pem"};
  // Before: TLS alone was accepted for 0.0.0.0, letting any client that trusts the
  // certificate submit jobs.
  std::vector<std::string> argv = {BinaryPath("fp8d"), "--listen",
                                   "0.0.0.0:" + std::to_string(PickFreePort()), "--state-dir",
                                   root + "/state", "--engine", "cpu"};
  argv.insert(argv.end(), tls.begin(), tls.end());
  auto refused = RunProcess(argv, absl::Seconds(20));
  EXPECT_EQ(refused.exit_code, 2);
  EXPECT_TRUE(absl::StrContains(refused.err, "--tls-client-ca")) << refused.err;

  // With client certificates verified it starts, and a client without one gets nowhere.
  std::vector<std::string> extra = tls;
  extra.insert(extra.end(), {"--tls-client-ca", root + "/cert.pem", "--listen",
                             "0.0.0.0:" + std::to_string(PickFreePort())});
  Daemon daemon(root + "/state2", root, extra);
  daemon.UseTls(root + "/cert.pem");
  (void)daemon.Start("", absl::Seconds(2));  // the probe has no client certificate
  EXPECT_TRUE(WaitFor([&] { return absl::StrContains(daemon.log(), "tls+client-certs"); },
                      absl::Seconds(20)))
      << daemon.log();
}

TEST(DaemonSecurity, StateDirAndEverythingInItArePrivate) {
  auto f = StartDaemonWithCorpus("private");
  JobFileOptions options;
  options.steps = 3;
  const v1::Job job = SubmitAndFinish(f, options);
  const std::string dir = JobDir(f, job);
  EXPECT_EQ(Mode(f.root + "/state"), 0700);
  EXPECT_EQ(Mode(f.root + "/state/jobs"), 0700);
  EXPECT_EQ(Mode(dir), 0700);
  EXPECT_EQ(Mode(dir + "/checkpoints"), 0700);
  for (const auto& entry : fs::recursive_directory_iterator(dir)) {
    if (entry.is_regular_file()) {
      EXPECT_EQ(Mode(entry.path().string()), 0600) << entry.path();
    }
  }
}

TEST(DaemonSecurity, OneDaemonPerStateDirAndPerPort) {
  auto f = StartDaemonWithCorpus("single");
  // Same state dir: refused, naming the first daemon.
  Daemon second(f.root + "/state", f.root + "/data");
  EXPECT_FALSE(second.Start("", absl::Seconds(10)).ok());
  EXPECT_TRUE(absl::StrContains(second.log(), "is in use by fp8d (pid")) << second.log();
  // Same port, other state dir: refused (no SO_REUSEPORT), naming the process on the port.
  Daemon third(f.root + "/state3", f.root + "/data", {"--listen", f.daemon->address()});
  EXPECT_FALSE(third.Start("", absl::Seconds(10)).ok());
  EXPECT_TRUE(absl::StrContains(third.log(), "the port is in use by fp8d (pid")) << third.log();
  EXPECT_TRUE(f.client->GetServerInfo().ok()) << "the first daemon still answers";
}

TEST(DaemonRequests, RegexesAreRe2WithALimit) {
  auto f = StartDaemonWithCorpus("regex");
  // 3000 bytes: within the 4 KiB bound on any string, beyond the 1 KiB bound on a regex.
  const std::string nested = std::string(1500, '(') + std::string(1500, ')');
  // Before: SIGSEGV in SubmitJob and StreamAmax; (.*)*(.*)*! wedged the scheduler.
  EXPECT_STATUS(f.client->SubmitJobText(JobYaml({}), {"recipe.name=delayed",
                                                      "recipe.policy.include=" + nested}),
                StatusCode::kInvalidArgument, "at most 1024");
  JobFileOptions options;
  options.steps = 3;
  options.recipe = "delayed";
  auto wedge = f.client->SubmitJobText(JobYaml(options), {"recipe.policy.include=(.*)*(.*)*!"});
  ASSERT_TRUE(wedge.ok()) << wedge.status();
  v1::Job done;
  ASSERT_TRUE(WaitForJob(*f.client, wedge->name(),
                         [](const v1::Job& j) { return j.state() == v1::SUCCEEDED; },
                         absl::Seconds(60), &done))
      << done.DebugString();
  v1::StreamAmaxRequest request;
  request.set_name(wedge->name());
  request.set_layer_regex(nested);
  EXPECT_EQ(f.client->StreamAmax(request, [](const v1::AmaxRecord&) { return true; }).code(),
            StatusCode::kInvalidArgument);
  request.set_layer_regex("(.*)*(.*)*!");
  EXPECT_TRUE(f.client->StreamAmax(request, [](const v1::AmaxRecord&) { return true; }).ok());
  EXPECT_TRUE(f.client->GetServerInfo().ok());
}

TEST(DaemonRequests, StringsAreBoundedAndAdmissionIsAllOrNothing) {
  auto f = StartDaemonWithCorpus("bounds");
  const std::string long_name(3000, 'n');
  // Before: a 7.5 MB name was answered RESOURCE_EXHAUSTED and yet the job was created.
  EXPECT_STATUS(f.client->SubmitJobText(JobYaml({}), {"name=" + long_name}),
                StatusCode::kInvalidArgument, "spec.name is 3000 bytes");
  v1::SubmitJobRequest request;
  request.mutable_spec()->set_name(long_name);
  EXPECT_STATUS(f.client->SubmitJob(request), StatusCode::kInvalidArgument, "spec.name");
  request.Clear();
  request.set_spec_text(JobYaml({}));
  request.set_request_id(std::string(1000, 'r'));
  EXPECT_STATUS(f.client->SubmitJob(request), StatusCode::kInvalidArgument, "request_id");
  auto jobs = f.client->ListAllJobs();
  ASSERT_TRUE(jobs.ok());
  EXPECT_TRUE(jobs->empty()) << "no refused submit created a job";
}

TEST(DaemonRequests, ListJobsPagesBySize) {
  // Before: four jobs with 2.5 MB names made ListJobs fail for good. Now strings are bounded
  // and a page ends at 1 MiB: jobs with the largest allowed policies still list, over pages.
  auto f = StartDaemonWithCorpus("pages", {"--max-queued", "64"});
  JobFileOptions options;
  options.steps = 100000;
  options.recipe = "delayed";
  std::string text = JobYaml(options) + "    include:\n";
  for (int i = 0; i < 64; ++i) absl::StrAppend(&text, "      - ", std::string(1000, 'x'), i, "\n");
  constexpr int kJobs = 12;
  for (int i = 0; i < kJobs; ++i) {
    auto job = f.client->SubmitJobText(text, {});
    ASSERT_TRUE(job.ok()) << job.status();
  }
  auto first = f.client->ListJobs(500, "");
  ASSERT_TRUE(first.ok()) << first.status();
  EXPECT_LT(first->jobs_size(), kJobs);
  EXPECT_FALSE(first->next_page_token().empty());
  EXPECT_LE(first->ByteSizeLong(), (size_t{1} << 20) + 4096);
  auto all = f.client->ListAllJobs();
  ASSERT_TRUE(all.ok()) << all.status();
  EXPECT_EQ(all->size(), static_cast<size_t>(kJobs));
  for (const auto& j : *all) (void)f.client->CancelJob(j.name());
}

TEST(DaemonRequests, ListCheckpointsPages) {
  auto f = StartDaemonWithCorpus("ckpt-pages");
  JobFileOptions options;
  options.steps = 12;
  options.checkpoint_interval = 1;
  const v1::Job job = SubmitAndFinish(f, options);
  v1::ListCheckpointsRequest request;
  request.set_name(job.name());
  request.set_page_size(5);
  v1::ListCheckpointsResponse page;
  grpc::ClientContext ctx;
  ASSERT_TRUE(f.client->stub().ListCheckpoints(&ctx, request, &page).ok());
  EXPECT_EQ(page.checkpoints_size(), 5);
  EXPECT_EQ(page.next_page_token(), page.checkpoints(4).name());
  auto all = f.client->ListCheckpoints(job.name());  // follows the pages
  ASSERT_TRUE(all.ok()) << all.status();
  ASSERT_EQ(all->size(), 12u);
  EXPECT_EQ(all->back().step(), 12);
}

TEST(DaemonRequests, UndecodableRequestsAreInvalidArgumentWithAMessage) {
  auto f = StartDaemonWithCorpus("decode");
  grpc::ChannelArguments args;
  auto channel = grpc::CreateCustomChannel(f.daemon->address(),
                                           grpc::InsecureChannelCredentials(), args);
  grpc::GenericStub generic(channel);
  // A string field (tag 1, length 2) holding bytes that are not UTF-8, and bytes that are not
  // a protobuf message at all. Before: INTERNAL with an empty message.
  for (const std::string& bytes :
       {std::string("\x0a\x02\xff\xfe", 4), std::string("\xff\xff\xff", 3)}) {
    grpc::Slice slice(bytes);
    grpc::ByteBuffer request(&slice, 1);
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(20));
    grpc::CompletionQueue cq;
    auto call = generic.PrepareUnaryCall(&ctx, "/fp8d.v1.Trainer/GetJob", request, &cq);
    call->StartCall();
    grpc::ByteBuffer response;
    grpc::Status status;
    call->Finish(&response, &status, reinterpret_cast<void*>(1));
    void* tag = nullptr;
    bool ok = false;
    ASSERT_TRUE(cq.Next(&tag, &ok));
    EXPECT_EQ(status.error_code(), grpc::StatusCode::INVALID_ARGUMENT) << status.error_message();
    EXPECT_TRUE(absl::StrContains(status.error_message(), "GetJob")) << status.error_message();
    cq.Shutdown();
    while (cq.Next(&tag, &ok)) {
    }
  }
  // A binary job file through fp8ctl: the daemon names the file and says what is wrong.
  WriteFile(f.root + "/a.out", std::string("\x7f" "ELF\x02\x01\x01\x00\x00", 9));
  auto binary = f.daemon->Fp8ctl({"submit", f.root + "/a.out"});
  EXPECT_EQ(binary.exit_code, 1);
  EXPECT_TRUE(absl::StrContains(binary.err, "INVALID_ARGUMENT: a.out is not a text file"))
      << binary.err;
  WriteFile(f.root + "/empty.yaml", "");
  auto empty = f.daemon->Fp8ctl({"submit", f.root + "/empty.yaml"});
  EXPECT_TRUE(absl::StrContains(empty.err, "empty.yaml` is empty")) << empty.err;
}

TEST(DaemonRequests, BadDataIsRefusedAtSubmit) {
  auto f = StartDaemonWithCorpus("baddata");
  WriteFile(f.root + "/data/empty.txt", "");
  fs::create_directories(f.root + "/data/dir");
  EXPECT_STATUS(f.client->SubmitJobText(JobYaml({}), {"data.train=empty.txt"}),
                StatusCode::kInvalidArgument, "is empty");
  EXPECT_STATUS(f.client->SubmitJobText(JobYaml({}), {"data.train=dir"}),
                StatusCode::kInvalidArgument, "is a directory");
  EXPECT_STATUS(f.client->SubmitJobText(JobYaml({}), {"data.format=bin"}),
                StatusCode::kInvalidArgument, "data.format text");
  // The escape from the report: a link inside the root to a directory outside it.
  fs::create_directories(f.root + "/outside");
  WriteFile(f.root + "/outside/corpus.txt", CorpusText(50000));
  fs::create_directory_symlink(f.root + "/outside", f.root + "/data/lic");
  EXPECT_STATUS(f.client->SubmitJobText(JobYaml({}), {"data.train=nope/../lic/corpus.txt"}),
                StatusCode::kInvalidArgument, "does not exist");
  fs::create_directories(f.root + "/data/nope");
  EXPECT_STATUS(f.client->SubmitJobText(JobYaml({}), {"data.train=nope/../lic/corpus.txt"}),
                StatusCode::kPermissionDenied, "outside the root");
  auto jobs = f.client->ListAllJobs();
  ASSERT_TRUE(jobs.ok());
  EXPECT_TRUE(jobs->empty());
}

TEST(DaemonStreams, StreamsAreBoundedPerClientAndStalledOnesTimeOut) {
  const std::string root = MakeTempDir("stall");
  fs::create_directories(root + "/data");
  // A finished job whose amax log is far larger than what flow control lets a client that
  // does not read take in: every stream on it stalls in Write.
  const std::string job_dir = root + "/state/jobs/big-1";
  {
    auto log = MetricLog::Open(job_dir);
    ASSERT_TRUE(log.ok()) << log.status();
    v1::AmaxRecord record;
    for (int t = 0; t < 64; ++t) {
      v1::TensorAmax* tensor = record.add_tensors();
      tensor->set_layer(absl::StrCat("layers.", t, ".mlp.down"));
      for (int h = 0; h < 16; ++h) tensor->add_history(1.f + h);
    }
    for (int step = 1; step <= 2000; ++step) {
      record.set_step(step);
      ASSERT_TRUE((*log)->AppendAmax(record).ok());
    }
  }
  v1::JobRecord record;
  record.mutable_job()->set_name("jobs/big-1");
  record.mutable_job()->set_state(v1::SUCCEEDED);
  record.set_queue_seq(1);
  std::string json;
  ASSERT_TRUE(google::protobuf::util::MessageToJsonString(record, &json).ok());
  WriteFile(job_dir + "/job.json", json);

  Daemon daemon(root + "/state", root + "/data", {"--stream-stall-timeout", "2"});
  ASSERT_TRUE(daemon.Start().ok()) << daemon.log();
  auto stalled = OwnConnection(daemon);
  std::vector<std::unique_ptr<grpc::ClientContext>> contexts;
  std::vector<std::unique_ptr<grpc::ClientReader<v1::AmaxRecord>>> readers;
  v1::StreamAmaxRequest request;
  request.set_name("jobs/big-1");
  for (int i = 0; i < fp8d::kFollowStreamLimits.per_client; ++i) {  // never read
    contexts.push_back(std::make_unique<grpc::ClientContext>());
    readers.push_back(stalled->StreamAmax(contexts.back().get(), request));
  }
  // One more from the same client is refused at once...
  {
    grpc::ClientContext ctx;
    auto reader = stalled->StreamAmax(&ctx, request);
    v1::AmaxRecord r;
    while (reader->Read(&r)) {
    }
    const grpc::Status s = reader->Finish();
    EXPECT_EQ(s.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED) << s.error_message();
    EXPECT_TRUE(absl::StrContains(s.error_message(), "per client")) << s.error_message();
  }
  // ...while another client still streams the whole log.
  int64_t other = 0;
  EXPECT_TRUE(daemon.Client()->StreamAmax(request, [&](const v1::AmaxRecord&) {
    ++other;
    return true;
  }).ok());
  EXPECT_EQ(other, 2000);
  // The stalled streams are cancelled after the stall timeout, which frees their slots.
  EXPECT_TRUE(WaitFor([&] { return absl::StrContains(daemon.log(), "stopped reading"); },
                      absl::Seconds(30)))
      << daemon.log();
  EXPECT_TRUE(WaitFor(
      [&] {
        grpc::ClientContext ctx;
        v1::StreamMetricsRequest metrics;
        metrics.set_name("jobs/big-1");
        auto reader = stalled->StreamMetrics(&ctx, metrics);
        v1::MetricRecord r;
        while (reader->Read(&r)) {
        }
        return reader->Finish().ok();
      },
      absl::Seconds(30)));
  for (auto& c : contexts) c->TryCancel();
  for (auto& r : readers) (void)r->Finish();
}

std::string NewestCheckpoint(const std::string& dir) {
  std::string newest;
  for (const auto& e : fs::directory_iterator(dir)) {
    const std::string name = e.path().filename().string();
    if (absl::StartsWith(name, "step-") && absl::EndsWith(name, ".safetensors") && name > newest) {
      newest = name;
    }
  }
  return newest.empty() ? "" : dir + "/" + newest;
}

TEST(DaemonRecovery, DamagedJobRecordIsRestoredOrShownAndItsIdNeverReused) {
  auto f = StartDaemonWithCorpus("record");
  JobFileOptions options;
  options.steps = 3;
  const v1::Job job = SubmitAndFinish(f, options);
  const std::string dir = JobDir(f, job);
  ASSERT_EQ(f.daemon->Terminate(), 0);
  // Before: a damaged job.json made the job disappear (NOT_FOUND).
  WriteFile(dir + "/job.json", "{ \"job\": {\"name\": ");
  ASSERT_TRUE(f.daemon->Start().ok()) << f.daemon->log();
  auto restored = f.daemon->Client()->GetJob(job.name());
  ASSERT_TRUE(restored.ok()) << restored.status();
  EXPECT_EQ(restored->state(), v1::SUCCEEDED);
  EXPECT_TRUE(absl::StrContains(ReadFile(dir + "/job.json"), "SUCCEEDED")) << "rewritten";
  ASSERT_EQ(f.daemon->Terminate(), 0);
  // Both copies damaged: listed as such, and a new job never gets its id (before: it did, and
  // silently resumed from the orphan's checkpoint).
  WriteFile(dir + "/job.json", "garbage");
  WriteFile(dir + "/job.backup.json", "garbage");
  ASSERT_TRUE(f.daemon->Start().ok()) << f.daemon->log();
  auto client = f.daemon->Client();
  auto damaged = client->GetJob(job.name());
  ASSERT_TRUE(damaged.ok()) << damaged.status();
  EXPECT_EQ(damaged->state(), v1::FAILED);
  EXPECT_TRUE(absl::StrContains(damaged->reason(), "job record damaged")) << damaged->reason();
  auto fresh = client->SubmitJobText(JobYaml(options), {});
  ASSERT_TRUE(fresh.ok()) << fresh.status();
  EXPECT_NE(fresh->name(), job.name());
  EXPECT_EQ(ReadFile(dir + "/job.json"), "garbage") << "the damaged record is left as found";
}

TEST(DaemonRecovery, DamagedNewestCheckpointFallsBackToTheOneBefore) {
  auto f = StartDaemonWithCorpus("fallback");
  JobFileOptions options;
  options.steps = 40;
  options.checkpoint_interval = 5;
  auto job = f.client->SubmitJobText(JobYaml(options), {});
  ASSERT_TRUE(job.ok()) << job.status();
  ASSERT_TRUE(WaitForJob(*f.client, job->name(),
                         [](const v1::Job& j) { return j.step() >= 16; }, absl::Seconds(120)));
  f.daemon->Kill9();
  const std::string newest = NewestCheckpoint(f.root + "/state/jobs/" + job->name().substr(5) +
                                              "/checkpoints");
  ASSERT_FALSE(newest.empty());
  FlipByte(newest, 100);  // one byte of the data section
  // Before: the job FAILED with DATA_LOSS although intact older checkpoints existed.
  ASSERT_TRUE(f.daemon->Start().ok()) << f.daemon->log();
  auto client = f.daemon->Client();
  v1::Job done;
  ASSERT_TRUE(WaitForJob(*client, job->name(),
                         [](const v1::Job& j) { return j.state() == v1::SUCCEEDED; },
                         absl::Seconds(120), &done))
      << done.DebugString() << f.daemon->log();
  bool skipped = false;
  v1::StreamMetricsRequest request;
  request.set_name(job->name());
  ASSERT_TRUE(client->StreamMetrics(request, [&](const v1::MetricRecord& r) {
    if (r.has_event() && r.event().kind() == "checkpoint_skipped") {
      skipped = true;
      EXPECT_TRUE(absl::StrContains(r.event().message(), fs::path(newest).stem().string()))
          << r.event().message();
    }
    return true;
  }).ok());
  EXPECT_TRUE(skipped);
}

TEST(DaemonRecovery, PullOfACheckpointDamagedOnDiskFails) {
  auto f = StartDaemonWithCorpus("pullbad");
  JobFileOptions options;
  options.steps = 3;
  const v1::Job job = SubmitAndFinish(f, options);
  const std::string newest = NewestCheckpoint(JobDir(f, job) + "/checkpoints");
  ASSERT_FALSE(newest.empty());
  FlipByte(newest, 100);
  // Before: the daemon hashed the damaged bytes while sending and fp8ctl printed "verified".
  auto pull = f.daemon->Fp8ctl(
      {"checkpoint", "pull", job.name(), "--out", f.root + "/x.safetensors"});
  EXPECT_EQ(pull.exit_code, 1) << pull.out;
  EXPECT_FALSE(absl::StrContains(pull.out, "verified")) << pull.out;
  EXPECT_TRUE(absl::StrContains(pull.err, "DATA_LOSS")) << pull.err;
  EXPECT_FALSE(fs::exists(f.root + "/x.safetensors"));
}

}  // namespace
}  // namespace fp8d::itest
