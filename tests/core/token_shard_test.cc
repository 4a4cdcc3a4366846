// llm.c token shard format: exact header bytes, round trips at both widths, and every way a shard
// can be malformed.
#include "core/token_shard.h"

#include <cstring>
#include <string>
#include <vector>

#include "gtest/gtest.h"

namespace fp8d {
namespace {

int32_t HeaderInt(const std::string& bytes, int index) {
  int32_t v;
  std::memcpy(&v, bytes.data() + 4 * index, 4);
  return v;
}

void SetHeaderInt(std::string* bytes, int index, int32_t v) {
  std::memcpy(bytes->data() + 4 * index, &v, 4);
}

TEST(TokenShardTest, Uint16HeaderMatchesLlmcLayout) {
  const std::vector<int32_t> tokens = {0, 1, 50256, 65535};
  const std::string bytes = SerializeTokenShard(tokens, TokenWidth::kU16);
  ASSERT_EQ(bytes.size(), 1024u + 2 * tokens.size());
  EXPECT_EQ(HeaderInt(bytes, 0), 20240520);
  EXPECT_EQ(HeaderInt(bytes, 1), 1);
  EXPECT_EQ(HeaderInt(bytes, 2), 4);
  for (int i = 3; i < 256; ++i) EXPECT_EQ(HeaderInt(bytes, i), 0) << "header int " << i;
  // Token 2 (50256 = 0xC450) little-endian at byte 1024 + 4.
  EXPECT_EQ(static_cast<unsigned char>(bytes[1028]), 0x50);
  EXPECT_EQ(static_cast<unsigned char>(bytes[1029]), 0xC4);
}

TEST(TokenShardTest, Uint32HeaderMatchesLlmcLayout) {
  const std::vector<int32_t> tokens = {128000, 7};
  const std::string bytes = SerializeTokenShard(tokens, TokenWidth::kU32);
  ASSERT_EQ(bytes.size(), 1024u + 4 * tokens.size());
  EXPECT_EQ(HeaderInt(bytes, 0), 20240801);
  EXPECT_EQ(HeaderInt(bytes, 1), 7);
  EXPECT_EQ(HeaderInt(bytes, 2), 2);
}

TEST(TokenShardTest, RoundTripsBothWidths) {
  const std::vector<int32_t> small = {3, 0, 65535, 42, 1};
  for (TokenWidth w : {TokenWidth::kU16, TokenWidth::kU32}) {
    std::vector<int32_t> out = {-1};  // parse appends
    ASSERT_TRUE(ParseTokenShard(SerializeTokenShard(small, w), "s.bin", &out).ok());
    std::vector<int32_t> want = {-1};
    want.insert(want.end(), small.begin(), small.end());
    EXPECT_EQ(out, want);
  }
  const std::vector<int32_t> wide = {70000, 128255, 0};
  std::vector<int32_t> out;
  ASSERT_TRUE(ParseTokenShard(SerializeTokenShard(wide, TokenWidth::kU32), "w.bin", &out).ok());
  EXPECT_EQ(out, wide);
}

TEST(TokenShardTest, BadMagicIsInvalidArgumentNamingTheFile) {
  std::string bytes = SerializeTokenShard({1, 2, 3}, TokenWidth::kU16);
  SetHeaderInt(&bytes, 0, 12345);
  std::vector<int32_t> out;
  absl::Status s = ParseTokenShard(bytes, "train_000.bin", &out);
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(s.message().find("train_000.bin"), absl::string_view::npos) << s;
  EXPECT_NE(s.message().find("magic 12345"), absl::string_view::npos) << s;
}

TEST(TokenShardTest, WrongVersionIsInvalidArgument) {
  std::string bytes = SerializeTokenShard({1, 2, 3}, TokenWidth::kU16);
  SetHeaderInt(&bytes, 1, 7);  // uint16 shards are version 1
  std::vector<int32_t> out;
  absl::Status s = ParseTokenShard(bytes, "v.bin", &out);
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(s.message().find("version 7"), absl::string_view::npos) << s;
}

TEST(TokenShardTest, TruncatedDataIsDataLoss) {
  std::string bytes = SerializeTokenShard({1, 2, 3, 4}, TokenWidth::kU16);
  bytes.resize(bytes.size() - 1);
  std::vector<int32_t> out;
  absl::Status s = ParseTokenShard(bytes, "t.bin", &out);
  EXPECT_EQ(s.code(), absl::StatusCode::kDataLoss);
  EXPECT_NE(s.message().find("truncated"), absl::string_view::npos) << s;
}

TEST(TokenShardTest, TruncatedHeaderIsDataLoss) {
  std::vector<int32_t> out;
  absl::Status s = ParseTokenShard(std::string(100, '\0'), "h.bin", &out);
  EXPECT_EQ(s.code(), absl::StatusCode::kDataLoss);
  EXPECT_NE(s.message().find("h.bin"), absl::string_view::npos) << s;
}

TEST(TokenShardTest, TrailingBytesAreDataLoss) {
  std::string bytes = SerializeTokenShard({1, 2}, TokenWidth::kU32);
  bytes.append("xx");
  std::vector<int32_t> out;
  EXPECT_EQ(ParseTokenShard(bytes, "x.bin", &out).code(), absl::StatusCode::kDataLoss);
}

TEST(TokenShardTest, MissingFileIsNotFound) {
  std::vector<int32_t> out;
  EXPECT_EQ(ReadTokenShard("/nonexistent/fp8d/shard.bin", &out).code(),
            absl::StatusCode::kNotFound);
}

}  // namespace
}  // namespace fp8d
