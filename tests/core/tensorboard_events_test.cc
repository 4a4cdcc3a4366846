// CRC-32C and its TFRecord mask against published values, the TFRecord framing (round trip, torn
// tails, corruption), and TensorBoard event files decoded field by field with protobuf's generic
// wire-format parser, independently of the writer's encoder.
#include <unistd.h>

#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <memory>
#include <sstream>

#include "core/crc32c.h"
#include "core/tensorboard_writer.h"
#include "core/tfrecord.h"
#include "gtest/gtest.h"
#include "tests/core/tensorboard_event_reader.h"

namespace fp8d {
namespace {

using tensorboard_test::ReadEvents;

namespace fs = std::filesystem;

std::string FreshDir(const std::string& name) {
  const fs::path dir = fs::path(testing::TempDir()) /
                       ("tensorboard_test_" + std::to_string(getpid()) + "_" + name);
  fs::remove_all(dir);
  return dir.string();
}

TEST(Crc32c, MatchesRfc3720Vectors) {
  EXPECT_EQ(Crc32c("123456789", 9), 0xE3069283u);
  char buf[32];
  std::memset(buf, 0, sizeof(buf));
  EXPECT_EQ(Crc32c(buf, sizeof(buf)), 0x8A9136AAu);
  std::memset(buf, 0xFF, sizeof(buf));
  EXPECT_EQ(Crc32c(buf, sizeof(buf)), 0x62A8AB43u);
  for (int i = 0; i < 32; ++i) buf[i] = static_cast<char>(i);
  EXPECT_EQ(Crc32c(buf, sizeof(buf)), 0x46DD794Eu);
  // Continuing a CRC over a split buffer gives the CRC of the whole.
  EXPECT_EQ(Crc32c(buf + 10, 22, Crc32c(buf, 10)), 0x46DD794Eu);
}

TEST(Crc32c, MaskIsTheTfRecordMaskAndInvertible) {
  for (uint32_t crc : {0u, 1u, 0xE3069283u, 0xFFFFFFFFu, 0x8A9136AAu}) {
    EXPECT_EQ(MaskCrc32c(crc), ((crc >> 15) | (crc << 17)) + 0xa282ead8u);
    EXPECT_EQ(UnmaskCrc32c(MaskCrc32c(crc)), crc);
  }
  // Every TensorBoard event file starts with the 24-byte file_version event:
  // 18 00 00 00 00 00 00 00 a3 7f 4b 22.
  const char length24[8] = {0x18, 0, 0, 0, 0, 0, 0, 0};
  EXPECT_EQ(MaskCrc32c(Crc32c(length24, 8)), 0x224B7FA3u);
}

TEST(TfRecord, FramesAndParsesRecords) {
  const std::string a = "first", b(3000, 'x'), c;
  const std::string bytes = FrameTfRecord(a) + FrameTfRecord(b) + FrameTfRecord(c);
  EXPECT_EQ(bytes.size(), a.size() + b.size() + c.size() + 3 * kTfRecordOverheadBytes);
  EXPECT_EQ(bytes.substr(0, 8), std::string("\x05\0\0\0\0\0\0\0", 8));
  auto read = ParseTfRecords(bytes);
  ASSERT_TRUE(read.ok()) << read.status();
  ASSERT_EQ(read->records.size(), 3u);
  EXPECT_EQ(read->records[0], a);
  EXPECT_EQ(read->records[1], b);
  EXPECT_EQ(read->records[2], c);
  EXPECT_FALSE(read->torn_tail);
}

TEST(TfRecord, ATornTailEndsTheReadAndCorruptionIsDataLoss) {
  const std::string one = FrameTfRecord("one"), two = FrameTfRecord("two");
  for (size_t cut = 1; cut < two.size(); ++cut) {
    auto read = ParseTfRecords(one + two.substr(0, cut));
    ASSERT_TRUE(read.ok()) << "cut " << cut << ": " << read.status();
    EXPECT_EQ(read->records.size(), 1u);
    EXPECT_TRUE(read->torn_tail);
  }
  std::string flipped = one + two;
  flipped[one.size() + 13] ^= 0x01;  // a byte of the second record's data
  auto bad = ParseTfRecords(flipped);
  ASSERT_FALSE(bad.ok());
  EXPECT_TRUE(absl::IsDataLoss(bad.status()));
  EXPECT_NE(bad.status().message().find("byte " + std::to_string(one.size())), std::string::npos)
      << bad.status();
  std::string bad_length = one + two;
  bad_length[one.size()] ^= 0x01;
  EXPECT_TRUE(absl::IsDataLoss(ParseTfRecords(bad_length).status()));
}

fp8d::v1::AmaxRecord Amax(int64_t step) {
  fp8d::v1::AmaxRecord r;
  r.set_step(step);
  r.set_recipe_version(2);
  for (auto role : {fp8d::v1::INPUT, fp8d::v1::GRAD_OUTPUT}) {
    auto* t = r.add_tensors();
    t->set_layer("layers.0.mlp.down");
    t->set_role(role);
    t->set_amax(1.5f * step);
    t->set_scale(448.f / (1.5f * step));
    t->set_frac_saturated(0.001f * step);
    t->set_frac_underflow(0.25f);
  }
  return r;
}

TEST(TensorBoardWriter, WritesScalarsEvalTextAndSpacedFp8Statistics) {
  const std::string dir = FreshDir("scalars");
  {
    auto writer = TensorBoardWriter::Open(dir, /*total_steps=*/2500);
    ASSERT_TRUE(writer.ok()) << writer.status();
    // 2500 steps at most 1000 points: the FP8 scalars every 3rd step and at the last.
    EXPECT_TRUE((*writer)->WritesAmaxAt(3));
    EXPECT_FALSE((*writer)->WritesAmaxAt(4));
    EXPECT_TRUE((*writer)->WritesAmaxAt(2500));
    fp8d::v1::MetricRecord step;
    step.set_unix_micros(1'700'000'000'250'000);
    auto* m = step.mutable_step();
    m->set_step(3);
    m->set_loss(2.71828f);
    m->set_lr(3e-4f);
    m->set_grad_norm(0.5f);
    m->set_tokens_per_sec(12345.0);
    m->set_mfu(0.41);
    m->set_recipe_version(2);
    m->set_fp8_layers(8);
    (*writer)->OnAmax(Amax(3));
    (*writer)->OnAmax(Amax(4));  // not a written step
    (*writer)->OnMetric(step);
    fp8d::v1::MetricRecord eval;
    eval.mutable_eval()->set_step(3);
    eval.mutable_eval()->set_loss(2.5f);
    eval.mutable_eval()->set_bits_per_byte(3.6f);
    (*writer)->OnMetric(eval);
    fp8d::v1::MetricRecord change;
    auto* e = change.mutable_event();
    e->set_step(3);
    e->set_kind("recipe_changed");
    e->set_recipe_version(2);
    e->mutable_recipe()->set_name("delayed");
    (*writer)->OnMetric(change);
    EXPECT_TRUE((*writer)->status().ok());
  }
  const auto events = ReadEvents(dir);
  ASSERT_EQ(events.size(), 5u);
  EXPECT_EQ(events[0].file_version, "brain.Event:2");
  // FP8 statistics of step 3 only.
  EXPECT_EQ(events[1].step, 3);
  EXPECT_EQ(events[1].scalars.size(), 8u);
  EXPECT_FLOAT_EQ(events[1].scalars.at("fp8_amax/layers.0.mlp.down/input"), 4.5f);
  EXPECT_FLOAT_EQ(events[1].scalars.at("fp8_scale/layers.0.mlp.down/grad_output"), 448.f / 4.5f);
  EXPECT_FLOAT_EQ(events[1].scalars.at("fp8_saturated/layers.0.mlp.down/input"), 0.003f);
  EXPECT_FLOAT_EQ(events[1].scalars.at("fp8_underflow/layers.0.mlp.down/grad_output"), 0.25f);
  // The step: exact float values and the record's time.
  EXPECT_EQ(events[2].step, 3);
  EXPECT_DOUBLE_EQ(events[2].wall_time, 1'700'000'000.25);
  EXPECT_EQ(events[2].scalars.at("train/loss"), 2.71828f);
  EXPECT_EQ(events[2].scalars.at("train/learning_rate"), 3e-4f);
  EXPECT_EQ(events[2].scalars.at("train/tokens_per_sec"), 12345.f);
  EXPECT_EQ(events[2].scalars.at("train/mfu"), 0.41f);
  EXPECT_EQ(events[2].scalars.at("recipe/version"), 2.f);
  EXPECT_EQ(events[2].scalars.at("recipe/fp8_layers"), 8.f);
  EXPECT_EQ(events[3].scalars.at("eval/loss"), 2.5f);
  EXPECT_EQ(events[3].scalars.at("eval/bits_per_byte"), 3.6f);
  EXPECT_EQ(events[4].plugins.at("events"), "text");
  EXPECT_EQ(events[4].texts.at("events"), "**recipe_changed** at step 3: delayed v2 (amax kept)");
}

TEST(TensorBoardWriter, AResumedRunStartsASessionAfterTheCheckpointInANewFile) {
  const std::string dir = FreshDir("resume");
  auto first = TensorBoardWriter::Open(dir, 100);
  auto second = TensorBoardWriter::Open(dir, 100);
  ASSERT_TRUE(first.ok() && second.ok());
  EXPECT_NE((*first)->path(), (*second)->path());
  EXPECT_NE((*second)->path().find("tfevents"), std::string::npos);
  fp8d::v1::MetricRecord resumed;
  resumed.mutable_event()->set_step(40);
  resumed.mutable_event()->set_kind("resumed_from_checkpoint");
  (*second)->OnMetric(resumed);
  second->reset();
  first->reset();
  int starts = 0;
  for (const auto& e : ReadEvents(dir)) {
    if (e.session_status == 1) {
      ++starts;
      EXPECT_EQ(e.step, 41);
    }
  }
  EXPECT_EQ(starts, 1);
}

}  // namespace
}  // namespace fp8d
