// PullCheckpoint on the wire: chunks of at most 2 MiB, contiguous offsets, the whole file's
// SHA-256 on every chunk, and a pull that starts at any offset returns exactly the file's tail.
#include <filesystem>

#include "core/sha256.h"
#include "gtest/gtest.h"
#include "tests/integration/daemon_harness.h"

namespace fp8d::itest {
namespace {
namespace v1 = fp8d::v1;

constexpr int64_t kTwoMiB = 2 * 1024 * 1024;

struct Pulled {
  std::string bytes;
  std::vector<v1::CheckpointChunk> chunks;  // data cleared, metadata kept
  grpc::Status status;
};

Pulled RawPull(client::TrainerClient& client, const std::string& name, int64_t offset) {
  Pulled p;
  auto ctx = client.NewContext(60000);
  v1::PullCheckpointRequest request;
  request.set_name(name);
  request.set_offset(offset);
  auto reader = client.stub().PullCheckpoint(ctx.get(), request);
  v1::CheckpointChunk chunk;
  while (reader->Read(&chunk)) {
    p.bytes += chunk.data();
    chunk.clear_data();
    p.chunks.push_back(chunk);
  }
  p.status = reader->Finish();
  return p;
}

TEST(DaemonPull, ChunksAreAtMostTwoMiBCarryTheHashAndResumeFromAnyOffset) {
  auto f = StartDaemonWithCorpus("pull");
  // A wider model so the checkpoint spans several chunks.
  auto job = f.client->SubmitJobText(JobYaml({}), {"steps=1", "model.d_model=256",
                                                   "model.n_head=4", "model.d_ff=768"});
  ASSERT_TRUE(job.ok()) << job.status();
  ASSERT_TRUE(WaitForJob(*f.client, job->name(),
                         [](const v1::Job& j) { return j.state() == v1::SUCCEEDED; },
                         absl::Seconds(90)))
      << f.daemon->log();
  auto checkpoints = f.client->ListCheckpoints(job->name());
  ASSERT_TRUE(checkpoints.ok() && checkpoints->size() == 1);
  const v1::Checkpoint& c = checkpoints->front();
  ASSERT_GT(c.size_bytes(), 2 * kTwoMiB) << "the test needs a multi-chunk file";
  const std::string id = c.name().substr(c.name().rfind('/') + 1);
  const std::string on_disk = ReadFile(f.daemon->state_dir() + "/jobs/" + job->name().substr(5) +
                                       "/checkpoints/" + id + ".safetensors");
  ASSERT_EQ(static_cast<int64_t>(on_disk.size()), c.size_bytes());

  Pulled whole = RawPull(*f.client, c.name(), 0);
  ASSERT_TRUE(whole.status.ok()) << whole.status.error_message();
  EXPECT_EQ(whole.bytes, on_disk);
  EXPECT_GE(whole.chunks.size(), 3u);
  int64_t expected_offset = 0;
  for (size_t i = 0; i < whole.chunks.size(); ++i) {
    const auto& chunk = whole.chunks[i];
    EXPECT_EQ(chunk.offset(), expected_offset);
    EXPECT_EQ(chunk.sha256(), c.sha256());
    EXPECT_EQ(chunk.total_size(), c.size_bytes());
    EXPECT_EQ(chunk.checkpoint(), c.name());
    const int64_t next = i + 1 < whole.chunks.size() ? whole.chunks[i + 1].offset() : c.size_bytes();
    EXPECT_LE(next - chunk.offset(), kTwoMiB);
    expected_offset = next;
  }
  EXPECT_EQ(Sha256Hex(whole.bytes), c.sha256());

  const int64_t offset = kTwoMiB + 12345;
  Pulled tail = RawPull(*f.client, job->name(), offset);  // jobs/{job} = the latest checkpoint
  ASSERT_TRUE(tail.status.ok()) << tail.status.error_message();
  ASSERT_FALSE(tail.chunks.empty());
  EXPECT_EQ(tail.chunks.front().offset(), offset);
  EXPECT_EQ(tail.bytes, on_disk.substr(offset));

  // At the very end there is one empty chunk that still reports size and hash.
  Pulled end = RawPull(*f.client, c.name(), c.size_bytes());
  ASSERT_TRUE(end.status.ok());
  ASSERT_EQ(end.chunks.size(), 1u);
  EXPECT_TRUE(end.bytes.empty());
  EXPECT_EQ(end.chunks[0].sha256(), c.sha256());
}

}  // namespace
}  // namespace fp8d::itest
