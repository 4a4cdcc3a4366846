// safetensors: exact header layout per the format, deterministic bytes, round trips, reading
// BF16/F16, and rejection of malformed files.
#include "core/safetensors.h"

#include <cstring>
#include <string>

#include "gtest/gtest.h"

namespace fp8d {
namespace {

std::string WithLength(const std::string& json) {
  const uint64_t n = json.size();
  std::string out(8, '\0');
  std::memcpy(out.data(), &n, 8);
  return out + json;
}

std::string U16Bytes(std::initializer_list<uint16_t> v) {
  std::string out;
  for (uint16_t x : v) out.append(reinterpret_cast<const char*>(&x), 2);
  return out;
}

TensorMap SampleTensors() {
  TensorMap t;
  t["model.embed_tokens.weight"] = HostTensor{{2, 3}, {1, 2, 3, 4, 5, 6}};
  t["fp8.layer0.qkv.input.scale"] = HostTensor{{}, {0.5f}};
  t["model.norm.weight"] = HostTensor{{3}, {-1.f, 0.f, 3.25f}};
  t["optim.empty"] = HostTensor{{0}, {}};
  return t;
}

TEST(SafetensorsTest, HeaderMatchesTheFormatExactly) {
  TensorMap t;
  t["w"] = HostTensor{{2}, {1.f, -2.f}};
  auto bytes = SerializeSafetensors(t, {{"k", "v"}});
  ASSERT_TRUE(bytes.ok()) << bytes.status();
  const std::string json =
      R"({"__metadata__":{"k":"v"},"w":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}})";
  uint64_t n;
  std::memcpy(&n, bytes->data(), 8);
  EXPECT_EQ((8 + n) % 8, 0u) << "data starts 8-byte aligned";
  ASSERT_GE(n, json.size());
  EXPECT_EQ(bytes->substr(8, json.size()), json);
  EXPECT_EQ(bytes->substr(8 + json.size(), n - json.size()), std::string(n - json.size(), ' '));
  ASSERT_EQ(bytes->size(), 8 + n + 8);
  float data[2];
  std::memcpy(data, bytes->data() + 8 + n, 8);
  EXPECT_EQ(data[0], 1.f);
  EXPECT_EQ(data[1], -2.f);
}

TEST(SafetensorsTest, RoundTripsTensorsAndMetadata) {
  const TensorMap t = SampleTensors();
  const std::map<std::string, std::string> meta = {
      {"fp8d", R"({"step": "3", "quote": "a\"b"})"}, {"note", "line1\nline2\ttab \x01 ünï"}};
  auto bytes = SerializeSafetensors(t, meta);
  ASSERT_TRUE(bytes.ok()) << bytes.status();
  auto file = ParseSafetensors(*bytes);
  ASSERT_TRUE(file.ok()) << file.status();
  EXPECT_EQ(file->metadata, meta);
  ASSERT_EQ(file->tensors.size(), t.size());
  for (const auto& [name, tensor] : t) {
    ASSERT_TRUE(file->tensors.count(name)) << name;
    EXPECT_EQ(file->tensors.at(name).shape, tensor.shape) << name;
    EXPECT_EQ(file->tensors.at(name).data, tensor.data) << name;
  }
}

TEST(SafetensorsTest, BytesAreDeterministicAndTensorsLaidOutInNameOrder) {
  const TensorMap t = SampleTensors();
  auto a = SerializeSafetensors(t, {{"x", "1"}});
  auto b = SerializeSafetensors(t, {{"x", "1"}});
  ASSERT_TRUE(a.ok() && b.ok());
  EXPECT_EQ(*a, *b);
  auto header = ParseSafetensorsHeader(*a, static_cast<int64_t>(a->size()));
  ASSERT_TRUE(header.ok()) << header.status();
  std::vector<std::string> names;
  for (const auto& e : header->entries) {
    if (e.begin != e.end) names.push_back(e.name);
  }
  EXPECT_EQ(names, (std::vector<std::string>{"fp8.layer0.qkv.input.scale",
                                             "model.embed_tokens.weight", "model.norm.weight"}));
  EXPECT_EQ(header->data_offset % 8, 0);
  EXPECT_EQ(SafetensorsDataBytes(t), 4 * 10);
}

TEST(SafetensorsTest, EmptyMapRoundTrips) {
  auto bytes = SerializeSafetensors({}, {});
  ASSERT_TRUE(bytes.ok());
  auto file = ParseSafetensors(*bytes);
  ASSERT_TRUE(file.ok()) << file.status();
  EXPECT_TRUE(file->tensors.empty());
  EXPECT_TRUE(file->metadata.empty());
}

TEST(SafetensorsTest, ReadsBf16AndF16AsF32) {
  const std::string json =
      R"({"a":{"dtype":"BF16","shape":[2],"data_offsets":[0,4]},)"
      R"("h":{"dtype":"F16","shape":[1,4],"data_offsets":[4,12]}})";
  // BF16 1.5, -2; F16 1.0, 65504 (max), 2^-24 (smallest subnormal), -0.
  const std::string data = U16Bytes({0x3FC0, 0xC000, 0x3C00, 0x7BFF, 0x0001, 0x8000});
  auto file = ParseSafetensors(WithLength(json) + data);
  ASSERT_TRUE(file.ok()) << file.status();
  EXPECT_EQ(file->tensors.at("a").data, (std::vector<float>{1.5f, -2.f}));
  const HostTensor& h = file->tensors.at("h");
  EXPECT_EQ(h.shape, (std::vector<int64_t>{1, 4}));
  EXPECT_EQ(h.data[0], 1.f);
  EXPECT_EQ(h.data[1], 65504.f);
  EXPECT_EQ(h.data[2], 0x1.0p-24f);
  EXPECT_EQ(h.data[3], 0.f);
  EXPECT_TRUE(std::signbit(h.data[3]));
}

TEST(SafetensorsTest, SerializeRejectsShapeDataMismatchAndReservedNames) {
  TensorMap bad;
  bad["w"] = HostTensor{{2, 2}, {1, 2, 3}};
  absl::Status s = SerializeSafetensors(bad, {}).status();
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(s.message().find("w"), absl::string_view::npos);
  TensorMap reserved;
  reserved["__metadata__"] = HostTensor{{1}, {1}};
  EXPECT_EQ(SerializeSafetensors(reserved, {}).status().code(), absl::StatusCode::kInvalidArgument);
}

TEST(SafetensorsTest, ShortFileIsDataLoss) {
  EXPECT_EQ(ParseSafetensors("abc").status().code(), absl::StatusCode::kDataLoss);
}

TEST(SafetensorsTest, HeaderLengthBeyondTheFileIsDataLoss) {
  std::string bytes = WithLength("{}");
  const uint64_t huge = 1000;
  std::memcpy(bytes.data(), &huge, 8);
  EXPECT_EQ(ParseSafetensors(bytes).status().code(), absl::StatusCode::kDataLoss);
}

TEST(SafetensorsTest, GarbageHeaderIsDataLoss) {
  EXPECT_EQ(ParseSafetensors(WithLength("{not json at all")).status().code(),
            absl::StatusCode::kDataLoss);
  EXPECT_EQ(ParseSafetensors(WithLength("[1, 2]")).status().code(), absl::StatusCode::kDataLoss);
  EXPECT_EQ(ParseSafetensors(WithLength(R"({"w":{"dtype":"F32","shape":[1]}})")).status().code(),
            absl::StatusCode::kDataLoss);
  EXPECT_EQ(ParseSafetensors(WithLength(R"({"w":{"dtype":"F32","shape":[-1],"data_offsets":[0,4]}})") +
                             "abcd").status().code(),
            absl::StatusCode::kDataLoss);
}

TEST(SafetensorsTest, OffsetsThatDoNotTileTheDataAreDataLoss) {
  // A gap between tensors.
  const std::string gap =
      R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},)"
      R"("b":{"dtype":"F32","shape":[1],"data_offsets":[8,12]}})";
  EXPECT_EQ(ParseSafetensors(WithLength(gap) + std::string(12, '\0')).status().code(),
            absl::StatusCode::kDataLoss);
  // Offsets that disagree with the shape.
  const std::string wrong = R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,4]}})";
  EXPECT_EQ(ParseSafetensors(WithLength(wrong) + std::string(4, '\0')).status().code(),
            absl::StatusCode::kDataLoss);
}

TEST(SafetensorsTest, TruncatedOrExtendedDataIsDataLoss) {
  auto bytes = SerializeSafetensors(SampleTensors(), {});
  ASSERT_TRUE(bytes.ok());
  absl::Status truncated = ParseSafetensors(bytes->substr(0, bytes->size() - 4)).status();
  EXPECT_EQ(truncated.code(), absl::StatusCode::kDataLoss);
  EXPECT_NE(truncated.message().find("truncated"), absl::string_view::npos) << truncated;
  EXPECT_EQ(ParseSafetensors(*bytes + "junk").status().code(), absl::StatusCode::kDataLoss);
}

TEST(SafetensorsTest, UnsupportedDtypeIsInvalidArgument) {
  const std::string json = R"({"i":{"dtype":"I64","shape":[1],"data_offsets":[0,8]}})";
  absl::Status s = ParseSafetensors(WithLength(json) + std::string(8, '\0')).status();
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(s.message().find("I64"), absl::string_view::npos) << s;
}

}  // namespace
}  // namespace fp8d
