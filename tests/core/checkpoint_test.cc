// Checkpoints: round trip of tensors and metadata, integrity checks that turn every kind of
// corruption into DATA_LOSS, and an atomic write that leaves nothing else behind.
#include "core/checkpoint.h"

#include <stdlib.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>

#include "core/safetensors.h"
#include "core/sha256.h"
#include "google/protobuf/util/json_util.h"
#include "gtest/gtest.h"

namespace fp8d {
namespace {
namespace fs = std::filesystem;

std::string MakeTempDir() {
  std::string tmpl = testing::TempDir() + "/fp8d_ckpt_XXXXXX";
  EXPECT_NE(::mkdtemp(tmpl.data()), nullptr);
  return tmpl;
}

std::string ReadAll(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  std::stringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

void WriteAll(const std::string& path, const std::string& bytes) {
  std::ofstream f(path, std::ios::binary | std::ios::trunc);
  f << bytes;
}

std::vector<std::string> DirEntries(const std::string& dir) {
  std::vector<std::string> names;
  for (const auto& e : fs::directory_iterator(dir)) names.push_back(e.path().filename().string());
  std::sort(names.begin(), names.end());
  return names;
}

TensorMap SampleState() {
  TensorMap t;
  t["model.embed_tokens.weight"] = HostTensor{{4, 2}, {1, -2, 3, -4, 5e-8f, 6e30f, 0, -0.f}};
  t["optim.m.model.embed_tokens.weight"] = HostTensor{{4, 2}, {0.1f, 0.2f, 0.3f, 0.4f, 0.5f, 0.6f, 0.7f, 0.8f}};
  t["optim.step"] = HostTensor{{}, {12}};
  t["fp8.layers.0.qkv.input.amax_history"] = HostTensor{{16}, std::vector<float>(16, 3.5f)};
  return t;
}

fp8d::v1::CheckpointMetadata SampleMeta() {
  fp8d::v1::CheckpointMetadata m;
  m.set_step(12);
  m.mutable_spec()->set_name("tiny-shakespeare");
  m.mutable_spec()->mutable_data()->set_train("shakespeare.txt");
  m.mutable_recipe()->set_name("delayed");
  m.mutable_recipe()->set_amax_history_len(16);
  m.set_recipe_version(2);
  auto* change = m.add_recipe_history();
  change->set_step(5);
  change->set_version(2);
  change->mutable_recipe()->set_name("delayed");
  m.mutable_data()->set_epoch(1);
  m.mutable_data()->set_cursor(37);
  m.mutable_data()->set_order_seed(0xFFFFFFFFFFFFFFF1ull);  // above 2^63: JSON must keep it exact
  m.set_rng_state(0x8000000000000001ull);
  m.set_engine("cpu");
  m.set_tokens_seen(12 * 8 * 256);
  m.set_unix_micros(1700000000123456);
  return m;
}

class CheckpointTest : public testing::Test {
 protected:
  void SetUp() override { dir_ = MakeTempDir(); }
  void TearDown() override {
    ::chmod(dir_.c_str(), 0755);
    fs::remove_all(dir_);
  }
  std::string Path(const std::string& name) const { return dir_ + "/" + name; }

  // Writes the sample checkpoint and returns its bytes.
  std::string WriteSample(const std::string& path) {
    EXPECT_TRUE(WriteCheckpoint(path, SampleState(), SampleMeta()).ok());
    return ReadAll(path);
  }
  std::string dir_;
};

TEST_F(CheckpointTest, RoundTripsTensorsAndMetadataExactly) {
  const std::string path = Path("step-00000012.safetensors");
  ASSERT_TRUE(WriteCheckpoint(path, SampleState(), SampleMeta()).ok());
  auto loaded = ReadCheckpoint(path);
  ASSERT_TRUE(loaded.ok()) << loaded.status();
  const TensorMap want = SampleState();
  ASSERT_EQ(loaded->tensors.size(), want.size());
  for (const auto& [name, t] : want) {
    EXPECT_EQ(loaded->tensors.at(name).shape, t.shape) << name;
    // Bit-exact, including -0 and denormal-adjacent values.
    ASSERT_EQ(loaded->tensors.at(name).data.size(), t.data.size());
    EXPECT_EQ(std::memcmp(loaded->tensors.at(name).data.data(), t.data.data(), t.data.size() * 4), 0)
        << name;
  }
  fp8d::v1::CheckpointMetadata want_meta = SampleMeta();
  want_meta.set_format_version(kCheckpointFormatVersion);
  EXPECT_EQ(loaded->meta.SerializeAsString(), want_meta.SerializeAsString())
      << loaded->meta.DebugString();
  EXPECT_EQ(loaded->meta.data().order_seed(), 0xFFFFFFFFFFFFFFF1ull);
}

TEST_F(CheckpointTest, MetadataReadsFromTheHeaderAlone) {
  const std::string path = Path("c.safetensors");
  WriteSample(path);
  auto meta = ReadCheckpointMetadata(path);
  ASSERT_TRUE(meta.ok()) << meta.status();
  EXPECT_EQ(meta->step(), 12);
  EXPECT_EQ(meta->recipe().name(), "delayed");
  EXPECT_EQ(meta->data().cursor(), 37);
  EXPECT_EQ(meta->format_version(), 2);
}

TEST_F(CheckpointTest, FileIsPlainSafetensorsWithAContentHashAndARecordOfItsBytes) {
  const std::string path = Path("c.safetensors");
  const std::string bytes = WriteSample(path);
  auto file = ParseSafetensors(bytes);
  ASSERT_TRUE(file.ok()) << file.status();
  EXPECT_EQ(file->tensors.size(), 4u);
  ASSERT_TRUE(file->metadata.count(kCheckpointMetadataKey));
  ASSERT_TRUE(file->metadata.count(kCheckpointContentShaKey));
  // The record beside the file is the SHA-256 of its bytes, in sha256sum's format.
  auto recorded = ReadRecordedSha256(path);
  ASSERT_TRUE(recorded.ok()) << recorded.status();
  EXPECT_EQ(*recorded, Sha256Hex(bytes));
  EXPECT_EQ(ReadAll(path + ".sha256"), *recorded + "  c.safetensors\n");
}

// Replaces `from` by `to` (same length) in the file's JSON header.
void EditHeader(const std::string& path, const std::string& from, const std::string& to) {
  std::string bytes = ReadAll(path);
  const size_t at = bytes.find(from);
  ASSERT_NE(at, std::string::npos) << from;
  ASSERT_EQ(from.size(), to.size());
  bytes.replace(at, from.size(), to);
  WriteAll(path, bytes);
}

TEST_F(CheckpointTest, EditedHeaderFieldsAreDataLoss) {
  // The metadata is JSON inside the JSON header, so its quotes are escaped there. Each edit
  // keeps the file valid safetensors with valid metadata: only the hash can tell.
  for (const auto& [from, to] :
       std::vector<std::pair<std::string, std::string>>{{"\\\"step\\\":\\\"12\\\"",
                                                         "\\\"step\\\":\\\"13\\\""},
                                                        {"\\\"cursor\\\":\\\"37\\\"",
                                                         "\\\"cursor\\\":\\\"38\\\""},
                                                        {"\\\"epoch\\\":\\\"1\\\"",
                                                         "\\\"epoch\\\":\\\"2\\\""}}) {
    const std::string path = Path("c.safetensors");
    WriteSample(path);
    EditHeader(path, from, to);
    ASSERT_TRUE(ReadCheckpointMetadata(path).ok()) << "the edit must leave a readable header";
    absl::Status s = ReadCheckpoint(path).status();
    EXPECT_EQ(s.code(), absl::StatusCode::kDataLoss) << from << ": " << s;
    EXPECT_NE(s.message().find("content SHA-256"), std::string::npos) << s;
    EXPECT_EQ(VerifyCheckpoint(path).code(), absl::StatusCode::kDataLoss);
  }
}

TEST_F(CheckpointTest, FormatOneFilesStillRead) {
  const std::string path = Path("v1.safetensors");
  fp8d::v1::CheckpointMetadata meta = SampleMeta();
  meta.set_format_version(1);
  std::string meta_json;
  ASSERT_TRUE(google::protobuf::util::MessageToJsonString(meta, &meta_json).ok());
  std::string data;
  for (const auto& [name, t] : SampleState()) {
    data.append(reinterpret_cast<const char*>(t.data.data()), t.data.size() * sizeof(float));
  }
  auto bytes = SerializeSafetensors(
      SampleState(),
      {{kCheckpointMetadataKey, meta_json}, {kCheckpointDataShaKey, Sha256Hex(data)}});
  ASSERT_TRUE(bytes.ok());
  WriteAll(path, *bytes);
  auto loaded = ReadCheckpoint(path);
  ASSERT_TRUE(loaded.ok()) << loaded.status();
  EXPECT_EQ(loaded->meta.step(), 12);
}

TEST_F(CheckpointTest, StaleFilesOfInterruptedWritesAreRemoved) {
  WriteSample(Path("step-00000010.safetensors"));
  // A temp file of a process that has ended, one of a live process (pid 1), and a record whose
  // checkpoint was never renamed into place.
  pid_t dead = ::fork();
  if (dead == 0) ::_exit(0);
  ASSERT_GT(dead, 0);
  ::waitpid(dead, nullptr, 0);
  WriteAll(Path(".step-00000020.safetensors.tmp-" + std::to_string(dead) + "-0"), "partial");
  WriteAll(Path(".step-00000030.safetensors.tmp-1-0"), "someone else's write in progress");
  WriteAll(Path("step-00000020.safetensors.sha256"), std::string(64, 'a') + "  x\n");
  EXPECT_EQ(RemoveStaleCheckpointFiles(dir_), 2);
  EXPECT_EQ(DirEntries(dir_), (std::vector<std::string>{".step-00000030.safetensors.tmp-1-0",
                                                        "step-00000010.safetensors",
                                                        "step-00000010.safetensors.sha256"}));
}

TEST_F(CheckpointTest, FlippedDataByteIsDataLossNamingTheFile) {
  const std::string path = Path("c.safetensors");
  std::string bytes = WriteSample(path);
  bytes[bytes.size() - 5] ^= 0x01;  // one bit in the last tensor's data
  WriteAll(path, bytes);
  absl::Status s = ReadCheckpoint(path).status();
  EXPECT_EQ(s.code(), absl::StatusCode::kDataLoss);
  EXPECT_NE(s.message().find(path), absl::string_view::npos) << s;
  EXPECT_NE(s.message().find("SHA-256"), absl::string_view::npos) << s;
}

TEST_F(CheckpointTest, TruncatedFileIsDataLoss) {
  const std::string path = Path("c.safetensors");
  const std::string bytes = WriteSample(path);
  for (size_t keep : {bytes.size() - 1, bytes.size() / 2, size_t{100}, size_t{4}, size_t{0}}) {
    WriteAll(path, bytes.substr(0, keep));
    absl::Status s = ReadCheckpoint(path).status();
    EXPECT_EQ(s.code(), absl::StatusCode::kDataLoss) << "kept " << keep << ": " << s;
    EXPECT_NE(s.message().find(path), absl::string_view::npos) << s;
    EXPECT_EQ(ReadCheckpointMetadata(path).status().code(), absl::StatusCode::kDataLoss)
        << "kept " << keep;
  }
}

TEST_F(CheckpointTest, GarbageHeaderIsDataLoss) {
  const std::string path = Path("c.safetensors");
  std::string bytes = WriteSample(path);
  bytes[9] = '#';  // inside the JSON header
  WriteAll(path, bytes);
  EXPECT_EQ(ReadCheckpoint(path).status().code(), absl::StatusCode::kDataLoss);
  EXPECT_EQ(ReadCheckpointMetadata(path).status().code(), absl::StatusCode::kDataLoss);
  WriteAll(path, std::string(4096, 'x'));
  EXPECT_EQ(ReadCheckpoint(path).status().code(), absl::StatusCode::kDataLoss);
}

TEST_F(CheckpointTest, SafetensorsWithoutFp8dMetadataIsDataLoss) {
  const std::string path = Path("foreign.safetensors");
  auto bytes = SerializeSafetensors(SampleState(), {{"format", "pt"}});
  ASSERT_TRUE(bytes.ok());
  WriteAll(path, *bytes);
  EXPECT_EQ(ReadCheckpoint(path).status().code(), absl::StatusCode::kDataLoss);
  EXPECT_EQ(ReadCheckpointMetadata(path).status().code(), absl::StatusCode::kDataLoss);
}

TEST_F(CheckpointTest, MissingFileOrDirectoryIsNotFound) {
  EXPECT_EQ(ReadCheckpoint(Path("absent.safetensors")).status().code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(ReadCheckpoint(dir_).status().code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(ReadCheckpointMetadata(dir_).status().code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(ReadCheckpointMetadata(Path("absent.safetensors")).status().code(),
            absl::StatusCode::kNotFound);
}

TEST_F(CheckpointTest, AtomicWriteLeavesOnlyTheTargetAndReplacesAnOldOne) {
  const std::string path = Path("latest.safetensors");
  WriteSample(path);
  EXPECT_EQ(DirEntries(dir_),
            (std::vector<std::string>{"latest.safetensors", "latest.safetensors.sha256"}));
  fp8d::v1::CheckpointMetadata newer = SampleMeta();
  newer.set_step(13);
  ASSERT_TRUE(WriteCheckpoint(path, SampleState(), newer).ok());
  EXPECT_EQ(DirEntries(dir_),
            (std::vector<std::string>{"latest.safetensors", "latest.safetensors.sha256"}));
  auto meta = ReadCheckpointMetadata(path);
  ASSERT_TRUE(meta.ok());
  EXPECT_EQ(meta->step(), 13);
}

TEST_F(CheckpointTest, WriteCreatesMissingDirectories) {
  const std::string path = Path("jobs/a/step-1.safetensors");
  ASSERT_TRUE(WriteCheckpoint(path, SampleState(), SampleMeta()).ok());
  EXPECT_TRUE(ReadCheckpoint(path).ok());
  EXPECT_EQ(DirEntries(Path("jobs/a")),
            (std::vector<std::string>{"step-1.safetensors", "step-1.safetensors.sha256"}));
}

TEST_F(CheckpointTest, FailedWriteLeavesNoTempFileAndKeepsTheOldCheckpoint) {
  const std::string path = Path("c.safetensors");
  WriteSample(path);
  // A tensor whose shape disagrees with its data fails before anything is written.
  TensorMap bad = SampleState();
  bad["broken"] = HostTensor{{3}, {1.f}};
  EXPECT_EQ(WriteCheckpoint(path, bad, SampleMeta()).status().code(),
            absl::StatusCode::kInvalidArgument);
  // The target's directory is read-only: creating the temp file fails.
  if (::geteuid() != 0) {  // root ignores directory permissions
    ASSERT_EQ(::chmod(dir_.c_str(), 0555), 0);
    EXPECT_FALSE(WriteCheckpoint(path, SampleState(), SampleMeta()).ok());
    ::chmod(dir_.c_str(), 0755);
  }
  EXPECT_EQ(DirEntries(dir_), (std::vector<std::string>{"c.safetensors", "c.safetensors.sha256"}));
  EXPECT_TRUE(ReadCheckpoint(path).ok());
}

TEST(CheckpointSha256Test, MatchesKnownVectorsAndFileHash) {
  EXPECT_EQ(Sha256Hex(""), "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
  EXPECT_EQ(Sha256Hex("abc"), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
  Sha256 incremental;
  incremental.Update("a");
  incremental.Update("bc");
  EXPECT_EQ(incremental.HexDigest(), Sha256Hex("abc"));

  const std::string dir = MakeTempDir();
  // Larger than one read chunk, so the streaming path is exercised.
  std::string big(3 * (1 << 20) + 17, '\0');
  for (size_t i = 0; i < big.size(); ++i) big[i] = static_cast<char>(i * 131 % 251);
  WriteAll(dir + "/f", big);
  auto file_hash = Sha256File(dir + "/f");
  ASSERT_TRUE(file_hash.ok()) << file_hash.status();
  EXPECT_EQ(*file_hash, Sha256Hex(big));
  EXPECT_EQ(Sha256File(dir + "/missing").status().code(), absl::StatusCode::kNotFound);
  fs::remove_all(dir);
}

}  // namespace
}  // namespace fp8d
