// The Python example (client/python/follow_metrics.py) against a real daemon, with Debian's
// python3-grpcio and the stubs the build generates from proto/fp8d/v1.
#include <filesystem>

#include "absl/strings/match.h"
#include "absl/strings/str_split.h"
#include "gtest/gtest.h"
#include "tests/integration/daemon_harness.h"

namespace fp8d::itest {
namespace {
namespace v1 = fp8d::v1;

constexpr char kPython[] = "/usr/bin/python3";

TEST(PythonClient, ChecksHealthAndFollowsAMetricStream) {
  ASSERT_TRUE(std::filesystem::exists(std::string(FP8D_PROTO_GEN_PY) + "/fp8d/v1/trainer_pb2_grpc.py"))
      << "the build generates the Python stubs into " << FP8D_PROTO_GEN_PY;
  ASSERT_TRUE(std::filesystem::exists(kPython));
  const std::string root = MakeTempDir("python");
  std::filesystem::create_directories(root + "/data");
  WriteFile(root + "/data/corpus.txt", CorpusText(100000));
  const std::string token = "python-token-0123456789";
  WritePrivateFile(root + "/token", token);
  Daemon daemon(root + "/state", root + "/data", {"--token-file", root + "/token"});
  ASSERT_TRUE(daemon.Start(token).ok()) << daemon.log();
  JobFileOptions options;
  options.steps = 15;
  auto job = daemon.Client(token)->SubmitJobText(JobYaml(options), {});
  ASSERT_TRUE(job.ok()) << job.status();

  auto result = RunProcess(
      {kPython, std::string(FP8D_SOURCE_DIR) + "/client/python/follow_metrics.py", "--addr",
       daemon.address(), "--token-file", root + "/token", "--job", job->name()},
      absl::Seconds(90), {"PYTHONPATH=" + std::string(FP8D_PROTO_GEN_PY)});
  ASSERT_EQ(result.exit_code, 0) << result.err;
  std::vector<std::string> lines = absl::StrSplit(result.out, '\n', absl::SkipEmpty());
  ASSERT_GE(lines.size(), 3u) << result.out;
  EXPECT_EQ(lines[0], R"({"health": "SERVING"})");
  EXPECT_TRUE(absl::StrContains(lines[1], R"("engine": "cpu")")) << lines[1];
  int steps = 0;
  bool finished = false;
  for (size_t i = 2; i < lines.size(); ++i) {
    steps += absl::StrContains(lines[i], R"("step": {)");
    finished |= absl::StrContains(lines[i], R"("kind": "finished")");
  }
  EXPECT_EQ(steps, 15) << result.out;
  EXPECT_TRUE(finished) << result.out;

  // Without the token the example reports the failure and exits 1.
  auto denied = RunProcess(
      {kPython, std::string(FP8D_SOURCE_DIR) + "/client/python/follow_metrics.py", "--addr",
       daemon.address(), "--job", job->name()},
      absl::Seconds(60), {"PYTHONPATH=" + std::string(FP8D_PROTO_GEN_PY)});
  EXPECT_NE(denied.exit_code, 0);
  EXPECT_TRUE(absl::StrContains(denied.err, "UNAUTHENTICATED")) << denied.err;
}

}  // namespace
}  // namespace fp8d::itest
