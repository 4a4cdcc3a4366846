// A bounded, seeded fuzzer of every fp8d.v1.Trainer method: valid requests of each method are
// serialized and mutated at the byte level (flips, insertions, deletions, truncations, random
// bytes) and sent raw through a generic stub, so the daemon also sees bytes that do not decode.
// Every call must end, and with OK or a status that has a message; the daemon must still be
// up and answering at the end. Bounded by kCallsPerMethod and kBudget; the seed makes it
// repeatable.
#include <signal.h>

#include <chrono>
#include <filesystem>
#include <random>
#include <string>
#include <vector>

#include <grpcpp/generic/generic_stub.h>
#include <grpcpp/grpcpp.h>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "fp8d/v1/trainer.pb.h"
#include "gtest/gtest.h"
#include "tests/integration/daemon_harness.h"

namespace fp8d::itest {
namespace {
namespace v1 = fp8d::v1;

constexpr int kCallsPerMethod = 200;
constexpr absl::Duration kBudget = absl::Seconds(90);
constexpr auto kCallDeadline = std::chrono::seconds(5);
constexpr uint32_t kSeed = 7;

struct Method {
  std::string name;       // "/fp8d.v1.Trainer/GetJob"
  bool server_streaming;
  std::string seed;       // a valid serialized request
};

std::vector<Method> Methods(const std::string& job) {
  auto bytes = [](const google::protobuf::Message& m) { return m.SerializeAsString(); };
  v1::GetJobRequest name;
  name.set_name(job);
  v1::SubmitJobRequest submit;
  JobFileOptions options;
  options.steps = 2;
  submit.set_spec_text(JobYaml(options));
  submit.set_spec_file("fuzz.yaml");
  submit.add_set("optimizer.lr=1e-3");
  v1::ListJobsRequest list;
  list.set_page_size(2);
  v1::UpdateRecipeRequest recipe;
  recipe.set_name(job);
  recipe.mutable_recipe()->set_name("delayed");
  recipe.mutable_recipe()->mutable_policy()->add_include("layers\\..*");
  recipe.set_amax_handling(v1::AMAX_RESET);
  v1::StreamMetricsRequest metrics;
  metrics.set_name(job);
  metrics.set_from_step(1);
  v1::StreamAmaxRequest amax;
  amax.set_name(job);
  amax.set_layer_regex("lm");
  v1::PullCheckpointRequest pull;
  pull.set_name(job);
  const std::string prefix = "/fp8d.v1.Trainer/";
  return {
      {prefix + "GetServerInfo", false, ""},
      {prefix + "SubmitJob", false, bytes(submit)},
      {prefix + "GetJob", false, bytes(name)},
      {prefix + "ListJobs", false, bytes(list)},
      {prefix + "CancelJob", false, bytes(name)},
      {prefix + "PauseJob", false, bytes(name)},
      {prefix + "ResumeJob", false, bytes(name)},
      {prefix + "UpdateRecipe", false, bytes(recipe)},
      {prefix + "GetRecipe", false, bytes(name)},
      {prefix + "StreamMetrics", true, bytes(metrics)},
      {prefix + "StreamAmax", true, bytes(amax)},
      {prefix + "SaveCheckpoint", false, bytes(name)},
      {prefix + "ListCheckpoints", false, bytes(name)},
      {prefix + "PullCheckpoint", true, bytes(pull)},
  };
}

std::string Mutate(std::string s, std::mt19937& rng) {
  auto pick = [&](size_t n) { return std::uniform_int_distribution<size_t>(0, n - 1)(rng); };
  if (pick(10) == 0) {  // bytes with no relation to the method
    std::string random(pick(64), '\0');
    for (char& c : random) c = static_cast<char>(pick(256));
    return random;
  }
  for (int edits = 1 + static_cast<int>(pick(3)); edits > 0; --edits) {
    switch (pick(4)) {
      case 0:
        if (!s.empty()) s[pick(s.size())] ^= static_cast<char>(1 << pick(8));
        break;
      case 1:
        for (size_t n = pick(8) + 1; n > 0; --n) {
          s.insert(s.empty() ? 0 : pick(s.size() + 1), 1, static_cast<char>(pick(256)));
        }
        break;
      case 2:
        if (!s.empty()) s.erase(pick(s.size()), pick(8) + 1);
        break;
      default:
        if (!s.empty()) s.resize(pick(s.size()));
    }
  }
  return s;
}

// One call with raw request bytes; returns its status.
grpc::Status Call(grpc::GenericStub& stub, const Method& method, const std::string& request) {
  grpc::ClientContext ctx;
  ctx.set_deadline(std::chrono::system_clock::now() + kCallDeadline);
  grpc::CompletionQueue cq;
  grpc::Slice slice(request);
  grpc::ByteBuffer buffer(&slice, 1);
  grpc::Status status;
  void* tag = nullptr;
  bool ok = false;
  if (!method.server_streaming) {
    auto call = stub.PrepareUnaryCall(&ctx, method.name, buffer, &cq);
    call->StartCall();
    grpc::ByteBuffer response;
    call->Finish(&response, &status, reinterpret_cast<void*>(1));
    cq.Next(&tag, &ok);
  } else {
    auto call = stub.PrepareCall(&ctx, method.name, &cq);
    call->StartCall(reinterpret_cast<void*>(1));
    cq.Next(&tag, &ok);
    if (ok) {
      call->WriteLast(buffer, grpc::WriteOptions(), reinterpret_cast<void*>(2));
      cq.Next(&tag, &ok);
      grpc::ByteBuffer response;
      for (int reads = 0; reads < 100000; ++reads) {  // bounded by the deadline as well
        call->Read(&response, reinterpret_cast<void*>(3));
        cq.Next(&tag, &ok);
        if (!ok) break;
      }
    }
    call->Finish(&status, reinterpret_cast<void*>(4));
    cq.Next(&tag, &ok);
  }
  cq.Shutdown();
  while (cq.Next(&tag, &ok)) {
  }
  return status;
}

TEST(RpcFuzz, EveryMethodAnswersMutatedRequestsWithAStatusThatSaysWhy) {
  auto f = StartDaemonWithCorpus("rpcfuzz", {"--max-queued", "2"});
  JobFileOptions options;
  options.steps = 3;
  auto job = f.client->SubmitJobText(JobYaml(options), {});
  ASSERT_TRUE(job.ok()) << job.status();
  ASSERT_TRUE(WaitForJob(*f.client, job->name(),
                         [](const v1::Job& j) { return j.state() == v1::SUCCEEDED; },
                         absl::Seconds(60)));
  grpc::GenericStub stub(grpc::CreateChannel(f.daemon->address(),
                                             grpc::InsecureChannelCredentials()));
  std::mt19937 rng(kSeed);
  const absl::Time deadline = absl::Now() + kBudget;
  int calls = 0, ok_calls = 0, invalid = 0;
  for (int round = 0; round < kCallsPerMethod && absl::Now() < deadline; ++round) {
    for (const Method& method : Methods(job->name())) {
      const std::string request = round == 0 ? method.seed : Mutate(method.seed, rng);
      const grpc::Status status = Call(stub, method, request);
      ++calls;
      if (status.ok()) {
        ++ok_calls;
        continue;
      }
      invalid += status.error_code() == grpc::StatusCode::INVALID_ARGUMENT;
      EXPECT_FALSE(status.error_message().empty())
          << method.name << " answered " << status.error_code() << " with no message";
      EXPECT_NE(status.error_code(), grpc::StatusCode::INTERNAL)
          << method.name << ": " << status.error_message();
      if (!method.server_streaming) {
        EXPECT_NE(status.error_code(), grpc::StatusCode::DEADLINE_EXCEEDED)
            << method.name << " did not answer within the deadline";
      }
      EXPECT_NE(status.error_code(), grpc::StatusCode::UNAVAILABLE)
          << method.name << ": the daemon went away: " << f.daemon->log();
    }
  }
  std::printf("rpc fuzz: %d calls, %d OK, %d INVALID_ARGUMENT\n", calls, ok_calls, invalid);
  EXPECT_GE(calls, 14 * 10) << "the time budget ran out far too early";
  ASSERT_EQ(::kill(f.daemon->pid(), 0), 0) << "fp8d died: " << f.daemon->log();
  EXPECT_TRUE(f.client->GetServerInfo().ok());
  auto jobs = f.client->ListAllJobs();
  ASSERT_TRUE(jobs.ok()) << jobs.status();
  for (const auto& j : *jobs) (void)f.client->CancelJob(j.name());
}

}  // namespace
}  // namespace fp8d::itest
