// DataLoader: byte-level text and llm.c shards, the train/validation split, the seeded epoch
// order, exact resume from a saved position, and every input error a user can make.
#include "core/data_loader.h"

#include <stdlib.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <set>
#include <string>
#include <vector>

#include "core/path_confinement.h"
#include "core/token_shard.h"
#include "gtest/gtest.h"

namespace fp8d {
namespace {
namespace fs = std::filesystem;

std::string MakeTempDir() {
  std::string tmpl = testing::TempDir() + "/fp8d_data_XXXXXX";
  const char* dir = ::mkdtemp(tmpl.data());
  EXPECT_NE(dir, nullptr);
  return tmpl;
}

void WriteFile(const std::string& path, const std::string& bytes) {
  std::ofstream f(path, std::ios::binary);
  f << bytes;
  ASSERT_TRUE(f.good()) << path;
}

// Pseudo-random lower-case text: 8-letter windows are distinct (26^8 possibilities), so a
// window's content tells where in the file it came from.
std::string SampleText(int n) {
  std::string s;
  uint64_t x = 0x2545F4914F6CDD1Dull;
  for (int i = 0; i < n; ++i) {
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    s.push_back(static_cast<char>('a' + (x >> 32) % 26));
  }
  return s;
}

fp8d::v1::DataSpec Spec(const std::string& train, const std::string& val = "") {
  fp8d::v1::DataSpec spec;
  spec.set_train(train);
  spec.set_val(val);
  return spec;
}

std::vector<TokenBatch> TakeBatches(DataLoader& loader, int n) {
  std::vector<TokenBatch> out;
  for (int i = 0; i < n; ++i) out.push_back(loader.NextTrainBatch());
  return out;
}

bool SameBatches(const std::vector<TokenBatch>& a, const std::vector<TokenBatch>& b) {
  if (a.size() != b.size()) return false;
  for (size_t i = 0; i < a.size(); ++i) {
    if (a[i].inputs != b[i].inputs || a[i].targets != b[i].targets) return false;
  }
  return true;
}

class DataLoaderTest : public testing::Test {
 protected:
  void SetUp() override { dir_ = MakeTempDir(); }
  void TearDown() override { fs::remove_all(dir_); }
  std::string Path(const std::string& name) const { return dir_ + "/" + name; }
  std::string dir_;
};

TEST_F(DataLoaderTest, TextBatchesAreByteWindowsOfTheTrainSplit) {
  const std::string text = SampleText(1000);
  WriteFile(Path("train.txt"), text);
  auto loader = DataLoader::Open(Spec("train.txt"), dir_, 256, 2, 8, 1);
  ASSERT_TRUE(loader.ok()) << loader.status();
  DataLoader& l = **loader;
  EXPECT_TRUE(l.byte_level());
  EXPECT_EQ(l.val_tokens(), 50);  // 5% held out by default
  EXPECT_EQ(l.train_tokens(), 950);
  EXPECT_EQ(l.num_train_windows(), (950 - 1) / 8);

  const TokenBatch b = l.NextTrainBatch();
  ASSERT_EQ(b.batch, 2);
  ASSERT_EQ(b.seq_len, 8);
  ASSERT_EQ(b.inputs.size(), 16u);
  for (int row = 0; row < 2; ++row) {
    std::string in, tgt;
    for (int t = 0; t < 8; ++t) {
      in.push_back(static_cast<char>(b.inputs[row * 8 + t]));
      tgt.push_back(static_cast<char>(b.targets[row * 8 + t]));
    }
    const size_t at = text.find(in);
    ASSERT_NE(at, std::string::npos);
    EXPECT_EQ(at % 8, 0u) << "windows start at multiples of seq_len";
    EXPECT_LE(at + 9, 950u) << "training windows stay in the train split";
    EXPECT_EQ(tgt, text.substr(at + 1, 8)) << "targets are inputs shifted by one";
  }
}

TEST_F(DataLoaderTest, HeldOutValidationIsTheTailOfTrain) {
  const std::string text = SampleText(2000);
  WriteFile(Path("train.txt"), text);
  fp8d::v1::DataSpec spec = Spec("train.txt");
  spec.set_val_fraction(0.1f);
  auto loader = DataLoader::Open(spec, dir_, 256, 2, 10, 1);
  ASSERT_TRUE(loader.ok()) << loader.status();
  EXPECT_EQ((*loader)->val_tokens(), 200);
  EXPECT_EQ((*loader)->train_tokens(), 1800);
  ASSERT_EQ((*loader)->NumValBatches(), (199 / 10) / 2);
  const TokenBatch v = (*loader)->ValBatch(1);
  // Batch 1, row 0 is validation window 2: tokens [1800 + 20, 1800 + 30).
  for (int t = 0; t < 10; ++t) {
    EXPECT_EQ(v.inputs[t], static_cast<unsigned char>(text[1820 + t]));
    EXPECT_EQ(v.targets[t], static_cast<unsigned char>(text[1821 + t]));
  }
}

TEST_F(DataLoaderTest, ValBatchesAreFixedAcrossCallsSeedsAndTraining) {
  WriteFile(Path("train.txt"), SampleText(3000));
  WriteFile(Path("val.txt"), SampleText(500).substr(100) + "xyz");
  auto a = DataLoader::Open(Spec("train.txt", "val.txt"), dir_, 256, 4, 16, 1);
  auto b = DataLoader::Open(Spec("train.txt", "val.txt"), dir_, 256, 4, 16, 99);
  ASSERT_TRUE(a.ok()) << a.status();
  ASSERT_TRUE(b.ok()) << b.status();
  EXPECT_EQ((*a)->train_tokens(), 3000) << "an explicit val file holds nothing out of train";
  EXPECT_EQ((*a)->val_tokens(), 403);
  ASSERT_EQ((*a)->NumValBatches(), (402 / 16) / 4);
  for (int64_t i = 0; i < (*a)->NumValBatches(); ++i) {
    const TokenBatch first = (*a)->ValBatch(i);
    TakeBatches(**a, 5);
    const TokenBatch again = (*a)->ValBatch(i);
    const TokenBatch other_seed = (*b)->ValBatch(i);
    EXPECT_EQ(first.inputs, again.inputs);
    EXPECT_EQ(first.targets, again.targets);
    EXPECT_EQ(first.inputs, other_seed.inputs);
  }
  EXPECT_NE((*a)->ValBatch(0).inputs, (*a)->ValBatch(1).inputs);
}

TEST_F(DataLoaderTest, OrderIsDeterministicForASeedAndDiffersForAnother) {
  WriteFile(Path("train.txt"), SampleText(5000));
  auto a = DataLoader::Open(Spec("train.txt"), dir_, 256, 4, 8, 1337);
  auto b = DataLoader::Open(Spec("train.txt"), dir_, 256, 4, 8, 1337);
  auto c = DataLoader::Open(Spec("train.txt"), dir_, 256, 4, 8, 1338);
  ASSERT_TRUE(a.ok() && b.ok() && c.ok());
  const auto batches_a = TakeBatches(**a, 20);
  EXPECT_TRUE(SameBatches(batches_a, TakeBatches(**b, 20)));
  EXPECT_FALSE(SameBatches(batches_a, TakeBatches(**c, 20)));
}

TEST_F(DataLoaderTest, EachEpochVisitsEveryWindowOnceInANewOrder) {
  // 8 * 24 + 1 train tokens = exactly 24 windows of 8, 6 batches of 4 per epoch.
  const std::string text = SampleText(193);
  WriteFile(Path("train.bin"), SerializeTokenShard(
      std::vector<int32_t>(text.begin(), text.end()), TokenWidth::kU16));
  WriteFile(Path("val.bin"), SerializeTokenShard(std::vector<int32_t>(40, 5), TokenWidth::kU16));
  auto loader = DataLoader::Open(Spec("train.bin", "val.bin"), dir_, 256, 4, 8, 7);
  ASSERT_TRUE(loader.ok()) << loader.status();
  ASSERT_EQ((*loader)->num_train_windows(), 24);
  std::vector<std::vector<int32_t>> epoch_orders;
  for (int epoch = 0; epoch < 3; ++epoch) {
    EXPECT_EQ((*loader)->Position().epoch(), epoch == 0 ? 0 : epoch - 1);
    std::vector<int32_t> firsts;
    std::set<int32_t> seen;
    for (const TokenBatch& b : TakeBatches(**loader, 6)) {
      for (int row = 0; row < 4; ++row) {
        const std::string in(b.inputs.begin() + row * 8, b.inputs.begin() + row * 8 + 8);
        const size_t at = text.find(in);
        ASSERT_EQ(at % 8, 0u);
        firsts.push_back(static_cast<int32_t>(at / 8));
        seen.insert(static_cast<int32_t>(at / 8));
      }
    }
    EXPECT_EQ(seen.size(), 24u) << "epoch " << epoch << " visits every window once";
    epoch_orders.push_back(firsts);
  }
  EXPECT_NE(epoch_orders[0], epoch_orders[1]);
  EXPECT_NE(epoch_orders[1], epoch_orders[2]);
  EXPECT_EQ((*loader)->Position().epoch(), 2);
}

TEST_F(DataLoaderTest, RestoreContinuesExactlyIncludingAcrossEpochs) {
  WriteFile(Path("train.txt"), SampleText(1200));
  auto original = DataLoader::Open(Spec("train.txt"), dir_, 256, 3, 16, 42);
  ASSERT_TRUE(original.ok()) << original.status();
  // 1140 train tokens -> 71 windows -> 23 batches per epoch; stop mid-epoch and run past the end.
  TakeBatches(**original, 20);
  const fp8d::v1::DataPosition pos = (*original)->Position();
  EXPECT_EQ(pos.epoch(), 0);
  EXPECT_EQ(pos.cursor(), 60);
  EXPECT_EQ(pos.order_seed(), 42u);
  const auto expected = TakeBatches(**original, 30);

  // A fresh loader, opened with a different seed: the position carries the order seed.
  auto resumed = DataLoader::Open(Spec("train.txt"), dir_, 256, 3, 16, 5);
  ASSERT_TRUE(resumed.ok());
  ASSERT_TRUE((*resumed)->Restore(pos).ok());
  EXPECT_TRUE(SameBatches(expected, TakeBatches(**resumed, 30)));
  EXPECT_EQ((*resumed)->Position().epoch(), (*original)->Position().epoch());
  EXPECT_EQ((*resumed)->Position().cursor(), (*original)->Position().cursor());
}

TEST_F(DataLoaderTest, RestoreRejectsAPositionThatDoesNotFitTheData) {
  WriteFile(Path("train.txt"), SampleText(1200));
  auto loader = DataLoader::Open(Spec("train.txt"), dir_, 256, 3, 16, 42);
  ASSERT_TRUE(loader.ok());
  fp8d::v1::DataPosition pos;
  pos.set_cursor(72);  // 71 windows
  absl::Status s = (*loader)->Restore(pos);
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(s.message().find("cursor"), absl::string_view::npos) << s;
  pos.set_cursor(0);
  pos.set_epoch(-1);
  EXPECT_EQ((*loader)->Restore(pos).code(), absl::StatusCode::kInvalidArgument);
}

TEST_F(DataLoaderTest, Uint16ShardGlobIsReadInSortedOrder) {
  std::vector<int32_t> first(100), second(100);
  for (int i = 0; i < 100; ++i) {
    first[i] = i;
    second[i] = 100 + i;
  }
  // Written out of order on purpose: the glob sorts.
  ASSERT_TRUE(WriteTokenShard(Path("shard_001.bin"), second, TokenWidth::kU16).ok());
  ASSERT_TRUE(WriteTokenShard(Path("shard_000.bin"), first, TokenWidth::kU16).ok());
  ASSERT_TRUE(WriteTokenShard(Path("val.bin"), std::vector<int32_t>(50, 3), TokenWidth::kU16).ok());
  auto loader = DataLoader::Open(Spec("shard_*.bin", "val.bin"), dir_, 50304, 2, 9, 1);
  ASSERT_TRUE(loader.ok()) << loader.status();
  EXPECT_FALSE((*loader)->byte_level());
  EXPECT_EQ((*loader)->train_tokens(), 200);
  for (const TokenBatch& b : TakeBatches(**loader, 11)) {  // one full epoch of 22 windows
    for (int row = 0; row < 2; ++row) {
      EXPECT_EQ(b.inputs[row * 9] % 9, 0) << "windows of the concatenation 0..199";
      for (int t = 0; t < 9; ++t) {
        EXPECT_EQ(b.inputs[row * 9 + t], b.inputs[row * 9] + t);
        EXPECT_EQ(b.targets[row * 9 + t], b.inputs[row * 9] + t + 1);
      }
    }
  }
}

TEST_F(DataLoaderTest, Uint32ShardKeepsTokensAbove65535) {
  std::vector<int32_t> tokens(300);
  for (int i = 0; i < 300; ++i) tokens[i] = 100000 + i;
  ASSERT_TRUE(WriteTokenShard(Path("train.bin"), tokens, TokenWidth::kU32).ok());
  auto loader = DataLoader::Open(Spec("train.bin"), dir_, 128256, 1, 4, 1);
  ASSERT_TRUE(loader.ok()) << loader.status();
  const TokenBatch v = (*loader)->ValBatch(0);
  EXPECT_EQ(v.inputs[0], 100000 + 285);  // 5% of 300 = last 15 tokens
  const TokenBatch b = (*loader)->NextTrainBatch();
  EXPECT_GE(b.inputs[0], 100000);
  EXPECT_EQ(b.targets[3], b.inputs[0] + 4);
}

TEST_F(DataLoaderTest, FormatOverrideReadsBinWithoutExtension) {
  ASSERT_TRUE(WriteTokenShard(Path("train.tokens"), std::vector<int32_t>(400, 9), TokenWidth::kU16).ok());
  fp8d::v1::DataSpec spec = Spec("train.tokens");
  spec.set_format("bin");
  auto loader = DataLoader::Open(spec, dir_, 10, 1, 8, 1);
  ASSERT_TRUE(loader.ok()) << loader.status();
  EXPECT_EQ((*loader)->train_tokens() + (*loader)->val_tokens(), 400);
  spec.set_format("parquet");
  absl::Status s = DataLoader::Open(spec, dir_, 10, 1, 8, 1).status();
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(s.message().find("data.format"), absl::string_view::npos) << s;
}

// --- input errors -------------------------------------------------------------------------

TEST_F(DataLoaderTest, BadMagicNamesTheFile) {
  std::string bytes = SerializeTokenShard(std::vector<int32_t>(500, 1), TokenWidth::kU16);
  bytes[0] ^= 0x5A;
  WriteFile(Path("bad.bin"), bytes);
  absl::Status s = DataLoader::Open(Spec("bad.bin"), dir_, 256, 2, 8, 1).status();
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(s.message().find("bad.bin"), absl::string_view::npos) << s;
  EXPECT_NE(s.message().find("magic"), absl::string_view::npos) << s;
}

TEST_F(DataLoaderTest, WrongVersionIsRejected) {
  std::string bytes = SerializeTokenShard(std::vector<int32_t>(500, 1), TokenWidth::kU32);
  bytes[4] = 1;  // uint32 shards are version 7
  WriteFile(Path("v.bin"), bytes);
  absl::Status s = DataLoader::Open(Spec("v.bin"), dir_, 256, 2, 8, 1).status();
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(s.message().find("version"), absl::string_view::npos) << s;
}

TEST_F(DataLoaderTest, TruncatedShardIsDataLoss) {
  std::string bytes = SerializeTokenShard(std::vector<int32_t>(500, 1), TokenWidth::kU16);
  bytes.resize(bytes.size() - 100);
  WriteFile(Path("short.bin"), bytes);
  absl::Status s = DataLoader::Open(Spec("short.bin"), dir_, 256, 2, 8, 1).status();
  EXPECT_EQ(s.code(), absl::StatusCode::kDataLoss);
  EXPECT_NE(s.message().find("short.bin"), absl::string_view::npos) << s;
  EXPECT_NE(s.message().find("truncated"), absl::string_view::npos) << s;
}

TEST_F(DataLoaderTest, TokenOutsideVocabSaysWhichTokenWhereAndTheVocab) {
  std::vector<int32_t> tokens(500, 1);
  tokens[321] = 50257;
  ASSERT_TRUE(WriteTokenShard(Path("big.bin"), tokens, TokenWidth::kU16).ok());
  absl::Status s = DataLoader::Open(Spec("big.bin"), dir_, 50257, 2, 8, 1).status();
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(s.message().find("token id 50257"), absl::string_view::npos) << s;
  EXPECT_NE(s.message().find("index 321"), absl::string_view::npos) << s;
  EXPECT_NE(s.message().find("big.bin"), absl::string_view::npos) << s;
  EXPECT_NE(s.message().find("vocab_size 50257"), absl::string_view::npos) << s;
}

TEST_F(DataLoaderTest, TextByteOutsideASmallVocabIsRejected) {
  std::string text = SampleText(600);
  text[10] = static_cast<char>(0xC3);  // UTF-8 lead byte 195
  WriteFile(Path("utf8.txt"), text);
  absl::Status s = DataLoader::Open(Spec("utf8.txt"), dir_, 128, 2, 8, 1).status();
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(s.message().find("token id 195"), absl::string_view::npos) << s;
  EXPECT_NE(s.message().find("index 10"), absl::string_view::npos) << s;
}

TEST_F(DataLoaderTest, MissingFileIsNotFound) {
  absl::Status s = DataLoader::Open(Spec("nope.txt"), dir_, 256, 2, 8, 1).status();
  EXPECT_EQ(s.code(), absl::StatusCode::kNotFound);
  EXPECT_NE(s.message().find("nope.txt"), absl::string_view::npos) << s;
  WriteFile(Path("train.txt"), SampleText(1000));
  EXPECT_EQ(DataLoader::Open(Spec("train.txt", "nope_val.txt"), dir_, 256, 2, 8, 1).status().code(),
            absl::StatusCode::kNotFound);
  EXPECT_EQ(DataLoader::Open(Spec("none_*.bin"), dir_, 256, 2, 8, 1).status().code(),
            absl::StatusCode::kNotFound);
}

TEST_F(DataLoaderTest, DirectoryIsNotAFile) {
  fs::create_directory(Path("sub"));
  absl::Status s = DataLoader::Open(Spec("sub"), dir_, 256, 2, 8, 1).status();
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(s.message().find("is a directory"), absl::string_view::npos) << s;
}

TEST_F(DataLoaderTest, PathEscapingTheRootIsPermissionDenied) {
  const std::string root = Path("root");
  fs::create_directory(root);
  WriteFile(Path("outside.txt"), SampleText(1000));
  WriteFile(root + "/inside.txt", SampleText(1000));
  ASSERT_TRUE(DataLoader::Open(Spec("inside.txt"), root, 256, 2, 8, 1).ok());

  for (const std::string& path : {std::string("../outside.txt"), Path("outside.txt"),
                                  std::string("sub/../../outside.txt")}) {
    absl::Status s = DataLoader::Open(Spec(path), root, 256, 2, 8, 1).status();
    EXPECT_EQ(s.code(), absl::StatusCode::kPermissionDenied) << path << ": " << s;
    EXPECT_NE(s.message().find(path), absl::string_view::npos) << s;
  }
  absl::Status val = DataLoader::Open(Spec("inside.txt", "../outside.txt"), root, 256, 2, 8, 1).status();
  EXPECT_EQ(val.code(), absl::StatusCode::kPermissionDenied) << val;
  EXPECT_NE(val.message().find("data.val"), absl::string_view::npos) << val;
}

TEST_F(DataLoaderTest, SymlinkOutOfTheRootIsPermissionDenied) {
  const std::string root = Path("root");
  fs::create_directory(root);
  WriteFile(Path("secret.txt"), SampleText(1000));
  fs::create_symlink(Path("secret.txt"), root + "/link.txt");
  EXPECT_EQ(DataLoader::Open(Spec("link.txt"), root, 256, 2, 8, 1).status().code(),
            absl::StatusCode::kPermissionDenied);
  // A glob match that is such a symlink is refused too.
  EXPECT_EQ(DataLoader::Open(Spec("*.txt"), root, 256, 2, 8, 1).status().code(),
            absl::StatusCode::kPermissionDenied);
}

TEST_F(DataLoaderTest, FileSmallerThanOneBatchIsInvalidArgument) {
  WriteFile(Path("tiny.txt"), SampleText(200));
  WriteFile(Path("val.txt"), SampleText(1000));
  // Train needs 4 * 64 + 1 = 257 tokens.
  absl::Status s = DataLoader::Open(Spec("tiny.txt", "val.txt"), dir_, 256, 4, 64, 1).status();
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(s.message().find("257"), absl::string_view::npos) << s;
  // Enough to train on, but 5% of it is too little to validate on.
  WriteFile(Path("mid.txt"), SampleText(2000));
  absl::Status v = DataLoader::Open(Spec("mid.txt"), dir_, 256, 4, 64, 1).status();
  EXPECT_EQ(v.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(v.message().find("validation"), absl::string_view::npos) << v;
}

TEST_F(DataLoaderTest, BadShapesAndFractionsAreInvalidArgument) {
  WriteFile(Path("train.txt"), SampleText(1000));
  fp8d::v1::DataSpec spec = Spec("train.txt");
  EXPECT_EQ(DataLoader::Open(spec, dir_, 256, 0, 8, 1).status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(DataLoader::Open(spec, dir_, 256, 2, 0, 1).status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(DataLoader::Open(Spec(""), dir_, 256, 2, 8, 1).status().code(), absl::StatusCode::kInvalidArgument);
  spec.set_val_fraction(0.5f);
  absl::Status s = DataLoader::Open(spec, dir_, 256, 2, 8, 1).status();
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(s.message().find("data.val_fraction"), absl::string_view::npos) << s;
}

// --- admission checks (CheckDataFiles) --------------------------------------------------

TEST_F(DataLoaderTest, AdmissionRefusesEmptyFilesDirectoriesAndTextReadAsBin) {
  // Before: each was accepted at submit and the job failed when it started.
  WriteFile(Path("empty.txt"), "");
  fs::create_directory(Path("dir"));
  WriteFile(Path("story.txt"), SampleText(5000));
  struct Case {
    fp8d::v1::DataSpec spec;
    absl::StatusCode code;
    std::string says;
  };
  fp8d::v1::DataSpec bin_on_text = Spec("story.txt");
  bin_on_text.set_format("bin");
  const std::vector<Case> cases = {
      {Spec("empty.txt"), absl::StatusCode::kInvalidArgument, "`empty.txt` is empty"},
      {Spec("dir"), absl::StatusCode::kInvalidArgument, "`dir` is a directory"},
      {bin_on_text, absl::StatusCode::kInvalidArgument, "data.format text"},
      {Spec("story.txt", "missing.txt"), absl::StatusCode::kNotFound, "data.val `missing.txt`"},
      {Spec("none_*.bin"), absl::StatusCode::kNotFound, "no file matches"},
  };
  for (const Case& c : cases) {
    absl::Status s = CheckDataFiles(c.spec, dir_);
    EXPECT_EQ(s.code(), c.code) << c.spec.DebugString() << s;
    EXPECT_NE(s.message().find(c.says), absl::string_view::npos) << s;
    // The loader itself gives the same answer.
    absl::Status opened = DataLoader::Open(c.spec, dir_, 256, 2, 8, 1).status();
    EXPECT_EQ(opened.code(), c.code) << opened;
  }
  EXPECT_TRUE(CheckDataFiles(Spec("story.txt"), dir_).ok());
}

}  // namespace
}  // namespace fp8d
