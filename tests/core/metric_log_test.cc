// The metric and amax logs round-trip records, filter by seq and step, survive torn tails and
// corruption, and keep numbering across reopen.
#include "core/metric_log.h"

#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <numeric>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace fp8d {
namespace {

namespace fs = std::filesystem;

std::string FreshDir(const std::string& name) {
  // Per process: several builds of this suite may run at once on one machine.
  const fs::path dir =
      fs::path(testing::TempDir()) / ("metric_log_test_" + std::to_string(getpid()) + "_" + name);
  fs::remove_all(dir);
  return dir.string();
}

fp8d::v1::MetricRecord StepRecord(int64_t step, float loss) {
  fp8d::v1::MetricRecord r;
  r.mutable_step()->set_step(step);
  r.mutable_step()->set_loss(loss);
  return r;
}

fp8d::v1::MetricRecord EventRecord(int64_t step, const std::string& kind) {
  fp8d::v1::MetricRecord r;
  r.mutable_event()->set_step(step);
  r.mutable_event()->set_kind(kind);
  return r;
}

void AppendBytes(const std::string& path, const std::string& bytes) {
  std::ofstream(path, std::ios::binary | std::ios::app) << bytes;
}

TEST(MetricLogCrc, MatchesKnownCrc32cVector) {
  // RFC 3720 test vector: CRC-32C of "123456789".
  EXPECT_EQ(Crc32c("123456789", 9), 0xE3069283u);
}

TEST(MetricLog, AssignsSeqAndRoundTripsRecords) {
  const std::string dir = FreshDir("roundtrip");
  auto log = MetricLog::Open(dir);
  ASSERT_TRUE(log.ok()) << log.status();
  fp8d::v1::MetricRecord started = EventRecord(0, "started");
  ASSERT_EQ(*(*log)->AppendMetric(&started), 0);
  EXPECT_EQ(started.seq(), 0);
  EXPECT_GT(started.unix_micros(), 0);
  for (int s = 1; s <= 3; ++s) {
    fp8d::v1::MetricRecord r = StepRecord(s, 5.f - s);
    ASSERT_EQ(*(*log)->AppendMetric(&r), s);
  }
  auto read = ReadMetricLog((*log)->metric_path(), 0, 0);
  ASSERT_TRUE(read.ok()) << read.status();
  ASSERT_EQ(read->records.size(), 4u);
  EXPECT_EQ(read->records[0].event().kind(), "started");
  EXPECT_EQ(read->records[3].seq(), 3);
  EXPECT_FLOAT_EQ(read->records[3].step().loss(), 2.f);
  EXPECT_FALSE(read->torn_tail);
  EXPECT_EQ(read->next_offset, static_cast<int64_t>(fs::file_size((*log)->metric_path())));
}

TEST(MetricLog, FiltersBySeqAndByStep) {
  const std::string dir = FreshDir("filter");
  auto log = MetricLog::Open(dir);
  ASSERT_TRUE(log.ok());
  for (int s = 1; s <= 5; ++s) (*log)->OnMetric(StepRecord(s, 1.f));
  auto from_seq = ReadMetricLog((*log)->metric_path(), /*from_seq=*/3, 0);
  ASSERT_TRUE(from_seq.ok());
  ASSERT_EQ(from_seq->records.size(), 2u);
  EXPECT_EQ(from_seq->records[0].step().step(), 4);
  auto from_step = ReadMetricLog((*log)->metric_path(), 0, /*from_step=*/2);
  ASSERT_TRUE(from_step.ok());
  ASSERT_EQ(from_step->records.size(), 4u);
  EXPECT_EQ(from_step->records[0].step().step(), 2);
}

TEST(MetricLog, FollowerContinuesFromNextOffset) {
  const std::string dir = FreshDir("follow");
  auto log = MetricLog::Open(dir);
  ASSERT_TRUE(log.ok());
  (*log)->OnMetric(StepRecord(1, 1.f));
  auto first = ReadMetricLog((*log)->metric_path(), 0, 0);
  ASSERT_TRUE(first.ok());
  ASSERT_EQ(first->records.size(), 1u);
  (*log)->OnMetric(StepRecord(2, 1.f));
  auto second = ReadMetricLog((*log)->metric_path(), 0, 0, first->next_offset);
  ASSERT_TRUE(second.ok());
  ASSERT_EQ(second->records.size(), 1u);
  EXPECT_EQ(second->records[0].step().step(), 2);
}

TEST(MetricLog, TornTailIsIgnoredByReadersAndTruncatedOnReopen) {
  const std::string dir = FreshDir("torn");
  std::string path;
  {
    auto log = MetricLog::Open(dir);
    ASSERT_TRUE(log.ok());
    for (int s = 1; s <= 3; ++s) (*log)->OnMetric(StepRecord(s, 1.f));
    path = (*log)->metric_path();
  }
  const auto intact_size = fs::file_size(path);
  // A crash mid-append: a frame claiming 100 payload bytes, followed by only 5 of them.
  AppendBytes(path, std::string("\x64\x00\x00\x00\x01\x02\x03\x04hello", 13));

  auto read = ReadMetricLog(path, 0, 0);
  ASSERT_TRUE(read.ok()) << read.status();
  EXPECT_EQ(read->records.size(), 3u);
  EXPECT_TRUE(read->torn_tail);
  EXPECT_EQ(read->next_offset, static_cast<int64_t>(intact_size));

  auto reopened = MetricLog::Open(dir);
  ASSERT_TRUE(reopened.ok()) << reopened.status();
  EXPECT_EQ(fs::file_size(path), intact_size);
  fp8d::v1::MetricRecord next = StepRecord(4, 1.f);
  ASSERT_EQ(*(*reopened)->AppendMetric(&next), 3);  // numbering continues after the intact ones
  auto after = ReadMetricLog(path, 0, 0);
  ASSERT_TRUE(after.ok());
  ASSERT_EQ(after->records.size(), 4u);
  EXPECT_EQ(after->records[3].step().step(), 4);
  EXPECT_FALSE(after->torn_tail);
}

TEST(MetricLog, CorruptedLastRecordIsATornTail) {
  const std::string dir = FreshDir("corrupt");
  std::string path;
  {
    auto log = MetricLog::Open(dir);
    ASSERT_TRUE(log.ok());
    for (int s = 1; s <= 3; ++s) (*log)->OnMetric(StepRecord(s, 1.f));
    path = (*log)->metric_path();
  }
  // Flip the last byte (inside record 3's payload): its CRC no longer matches, and no intact
  // record follows it, which is what a cut-short append looks like too.
  std::fstream f(path, std::ios::binary | std::ios::in | std::ios::out);
  f.seekg(-1, std::ios::end);
  char c;
  f.get(c);
  f.seekp(-1, std::ios::end);
  f.put(static_cast<char>(c ^ 0x40));
  f.close();
  auto read = ReadMetricLog(path, 0, 0);
  ASSERT_TRUE(read.ok());
  EXPECT_EQ(read->records.size(), 2u);
  EXPECT_TRUE(read->torn_tail);
}

// Writes `n` step records (steps 1..n) and returns the log's path and each record's offset.
std::string WriteSteps(const std::string& dir, int n, std::vector<int64_t>* offsets) {
  auto log = MetricLog::Open(dir);
  EXPECT_TRUE(log.ok());
  const std::string path = (*log)->metric_path();
  for (int s = 1; s <= n; ++s) {
    offsets->push_back(static_cast<int64_t>(fs::file_size(path)));
    (*log)->OnMetric(StepRecord(s, 1.f / s));
  }
  return path;
}

void FlipByte(const std::string& path, int64_t offset) {
  std::fstream f(path, std::ios::binary | std::ios::in | std::ios::out);
  f.seekg(offset);
  char c;
  f.get(c);
  f.seekp(offset);
  f.put(static_cast<char>(c ^ 0x5A));
}

std::vector<int64_t> Steps(const std::vector<fp8d::v1::MetricRecord>& records) {
  std::vector<int64_t> steps;
  for (const auto& r : records) steps.push_back(r.step().step());
  return steps;
}

TEST(MetricLog, FlippedByteInTheMiddleLosesOnlyThatRecord) {
  // Before: one flipped byte made readers stop there and a reopen truncate the rest (53 of 75
  // records of a running job lost, "dropping a torn tail").
  for (const int64_t within : {int64_t{0}, int64_t{5}, int64_t{12}}) {  // length, CRC, payload
    const std::string dir = FreshDir("middle_" + std::to_string(within));
    std::vector<int64_t> offsets;
    const std::string path = WriteSteps(dir, 75, &offsets);
    const auto size = fs::file_size(path);
    FlipByte(path, offsets[21] + within);  // inside step 22's record

    std::vector<int64_t> want;
    for (int s = 1; s <= 75; ++s) {
      if (s != 22) want.push_back(s);
    }
    auto read = ReadMetricLog(path, 0, 0);
    ASSERT_TRUE(read.ok()) << read.status();
    EXPECT_EQ(Steps(read->records), want) << "byte " << within;
    EXPECT_FALSE(read->torn_tail);
    EXPECT_EQ(read->damage.damaged_regions, 1);
    EXPECT_EQ(read->damage.first_damaged_offset, offsets[21]);

    auto reopened = MetricLog::Open(dir);
    ASSERT_TRUE(reopened.ok()) << reopened.status();
    EXPECT_EQ(fs::file_size(path), size) << "nothing may be truncated";
    EXPECT_EQ((*reopened)->metric_damage().damaged_regions, 1);
    EXPECT_EQ((*reopened)->metric_count(), 74);
    fp8d::v1::MetricRecord next = StepRecord(76, 1.f);
    ASSERT_EQ(*(*reopened)->AppendMetric(&next), 75) << "seq stays unique after the damage";
    auto after = ReadMetricLog(path, 0, 0);
    ASSERT_TRUE(after.ok());
    want.push_back(76);
    EXPECT_EQ(Steps(after->records), want);
  }
}

TEST(MetricLog, DamagedHeaderIsRepairedAndRecordsKept) {
  const std::string dir = FreshDir("bad_header");
  std::vector<int64_t> offsets;
  const std::string path = WriteSteps(dir, 10, &offsets);
  FlipByte(path, 2);  // in the magic
  auto read = ReadMetricLog(path, 0, 0);
  ASSERT_TRUE(read.ok()) << read.status();
  EXPECT_EQ(read->records.size(), 10u);
  auto reopened = MetricLog::Open(dir);
  ASSERT_TRUE(reopened.ok()) << reopened.status();
  EXPECT_TRUE((*reopened)->metric_damage().header_repaired);
  EXPECT_EQ((*reopened)->metric_count(), 10);
  auto after = ReadMetricLog(path, 0, 0);
  ASSERT_TRUE(after.ok());
  EXPECT_FALSE(after->damage.header_repaired) << "the header was rewritten";
  EXPECT_EQ(after->records.size(), 10u);
}

TEST(MetricLog, ResumedLogSkipsStepsItAlreadyHoldsButNotEvents) {
  const std::string dir = FreshDir("resume");
  std::vector<int64_t> offsets;
  const std::string path = WriteSteps(dir, 20, &offsets);
  auto resumed = MetricLog::Open(dir, /*skip_logged_steps=*/true);
  ASSERT_TRUE(resumed.ok());
  // A job resumed from step 10 runs steps 11.. again.
  (*resumed)->OnMetric(EventRecord(10, "resumed_from_checkpoint"));
  for (int s = 11; s <= 25; ++s) (*resumed)->OnMetric(StepRecord(s, 1.f / s));
  auto read = ReadMetricLog(path, 0, 0);
  ASSERT_TRUE(read.ok());
  std::vector<int64_t> steps;
  int events = 0;
  for (const auto& r : read->records) {
    if (r.has_step()) steps.push_back(r.step().step());
    events += r.has_event();
  }
  std::vector<int64_t> want(25);
  std::iota(want.begin(), want.end(), 1);
  EXPECT_EQ(steps, want) << "each step once";
  EXPECT_EQ(events, 1);
  // Without the option (a fresh run into the same folder) everything is appended.
  auto plain = MetricLog::Open(dir);
  ASSERT_TRUE(plain.ok());
  EXPECT_FALSE((*plain)->AlreadyLogged(StepRecord(3, 1.f)));
}

TEST(MetricLog, InterruptedHeaderIsRewrittenOnOpen) {
  const std::string dir = FreshDir("short_header");
  fs::create_directories(dir);
  AppendBytes((fs::path(dir) / kMetricLogFile).string(), "fp8d");
  auto log = MetricLog::Open(dir);
  ASSERT_TRUE(log.ok()) << log.status();
  (*log)->OnMetric(StepRecord(1, 1.f));
  auto read = ReadMetricLog((*log)->metric_path(), 0, 0);
  ASSERT_TRUE(read.ok());
  EXPECT_EQ(read->records.size(), 1u);
}

TEST(MetricLog, ForeignFileIsDataLoss) {
  const std::string dir = FreshDir("foreign");
  fs::create_directories(dir);
  AppendBytes((fs::path(dir) / kMetricLogFile).string(), "this is not a metric log at all");
  EXPECT_EQ(MetricLog::Open(dir).status().code(), absl::StatusCode::kDataLoss);
  EXPECT_EQ(ReadMetricLog((fs::path(dir) / kMetricLogFile).string(), 0, 0).status().code(),
            absl::StatusCode::kDataLoss);
}

TEST(MetricLog, AmaxLogIsSeparateAndFiltersByStep) {
  const std::string dir = FreshDir("amax");
  auto log = MetricLog::Open(dir);
  ASSERT_TRUE(log.ok());
  for (int s = 1; s <= 4; ++s) {
    fp8d::v1::AmaxRecord r;
    r.set_step(s);
    r.set_recipe_version(1);
    fp8d::v1::TensorAmax* t = r.add_tensors();
    t->set_layer("layers.0.attn.qkv");
    t->set_role(fp8d::v1::INPUT);
    t->set_amax(0.5f * s);
    t->add_history(0.5f * s);
    (*log)->OnAmax(r);
  }
  EXPECT_TRUE((*log)->status().ok());
  auto read = ReadAmaxLog((*log)->amax_path(), /*from_step=*/3);
  ASSERT_TRUE(read.ok()) << read.status();
  ASSERT_EQ(read->records.size(), 2u);
  EXPECT_EQ(read->records[0].step(), 3);
  EXPECT_FLOAT_EQ(read->records[1].tensors(0).amax(), 2.f);
  // The metric log holds no amax records, and each log refuses the other's type.
  EXPECT_EQ(ReadMetricLog((*log)->amax_path(), 0, 0).status().code(), absl::StatusCode::kDataLoss);
  auto metrics = ReadMetricLog((*log)->metric_path(), 0, 0);
  ASSERT_TRUE(metrics.ok());
  EXPECT_TRUE(metrics->records.empty());
}

TEST(MetricLog, MissingFileIsNotFound) {
  EXPECT_EQ(ReadMetricLog("/nonexistent/metrics.log", 0, 0).status().code(),
            absl::StatusCode::kNotFound);
}

}  // namespace
}  // namespace fp8d
