#include "core/tensorboard_writer.h"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "core/tfrecord.h"
#include "spdlog/spdlog.h"

namespace fp8d {
namespace {

namespace v1 = fp8d::v1;

// Field numbers of tensorboard/compat/proto/{event,summary,tensor,tensor_shape}.proto, the
// schema TensorBoard reads. Only the fields written here.
constexpr int kEventWallTime = 1;       // double
constexpr int kEventStep = 2;           // int64
constexpr int kEventFileVersion = 3;    // string
constexpr int kEventSummary = 5;        // Summary
constexpr int kEventSessionLog = 7;     // SessionLog
constexpr int kSessionLogStatus = 1;    // enum SessionStatus
constexpr int kSessionStatusStart = 1;
constexpr int kSummaryValue = 1;        // repeated Summary.Value
constexpr int kValueTag = 1;            // string
constexpr int kValueSimpleValue = 2;    // float
constexpr int kValueTensor = 8;         // TensorProto
constexpr int kValueMetadata = 9;       // SummaryMetadata
constexpr int kMetadataPluginData = 1;  // SummaryMetadata.PluginData
constexpr int kPluginName = 1;          // string
constexpr int kTensorDtype = 1;         // enum DataType
constexpr int kTensorShape = 2;         // TensorShapeProto (empty: a scalar)
constexpr int kTensorStringVal = 8;     // repeated bytes
constexpr int kDtString = 7;
constexpr char kFileVersion[] = "brain.Event:2";

// Protobuf wire format, just what the messages above need.
class ProtoWriter {
 public:
  void Varint(int field, uint64_t v) {
    Key(field, 0);
    PutVarint(v);
  }
  void Double(int field, double v) {
    Key(field, 1);
    Fixed(&v, 8);
  }
  void Float(int field, float v) {
    Key(field, 5);
    Fixed(&v, 4);
  }
  void Bytes(int field, absl::string_view v) {
    Key(field, 2);
    PutVarint(v.size());
    out_.append(v.data(), v.size());
  }
  void Message(int field, const ProtoWriter& m) { Bytes(field, m.out_); }
  const std::string& bytes() const { return out_; }

 private:
  void Key(int field, int wire_type) { PutVarint((static_cast<uint64_t>(field) << 3) | wire_type); }
  void PutVarint(uint64_t v) {
    while (v >= 0x80) {
      out_.push_back(static_cast<char>((v & 0x7F) | 0x80));
      v >>= 7;
    }
    out_.push_back(static_cast<char>(v));
  }
  void Fixed(const void* v, int bytes) {
    // The wire format is little-endian, as is every machine this builds for.
    out_.append(static_cast<const char*>(v), bytes);
  }
  std::string out_;
};

ProtoWriter EventHeader(int64_t step, double wall_time) {
  ProtoWriter event;
  event.Double(kEventWallTime, wall_time);
  event.Varint(kEventStep, static_cast<uint64_t>(step));
  return event;
}

double WallTime(int64_t unix_micros) {
  return unix_micros > 0 ? unix_micros / 1e6 : absl::ToUnixMicros(absl::Now()) / 1e6;
}

std::string RoleName(v1::TensorRole role) {
  return absl::AsciiStrToLower(v1::TensorRole_Name(role));
}

std::string EventText(const v1::Event& e) {
  std::string text = absl::StrCat("**", e.kind(), "** at step ", e.step());
  if (e.kind() == "recipe_changed") {
    absl::StrAppend(&text, ": ", e.recipe().name(), " v", e.recipe_version(),
                    e.amax_handling() == v1::AMAX_RESET ? " (amax reset)" : " (amax kept)");
  } else if (!e.message().empty()) {
    absl::StrAppend(&text, ": ", e.message());
  }
  return text;
}

}  // namespace

std::string Fp8TensorTag(const std::string& kind, const v1::TensorAmax& tensor) {
  return absl::StrCat(kind, "/", tensor.layer(), "/", RoleName(tensor.role()));
}

absl::StatusOr<std::unique_ptr<TensorBoardWriter>> TensorBoardWriter::Open(const std::string& dir,
                                                                           int64_t total_steps) {
  std::error_code ec;
  std::filesystem::create_directories(dir, ec);
  if (ec) {
    return absl::InternalError(absl::StrCat("cannot create TensorBoard directory ", dir, ": ",
                                            ec.message()));
  }
  char host[256] = "localhost";
  gethostname(host, sizeof(host) - 1);
  const std::string base = (std::filesystem::path(dir) /
                            absl::StrCat(kTensorBoardFilePrefix,
                                         absl::ToUnixSeconds(absl::Now()), ".", host, ".",
                                         getpid()))
                               .string();
  // Two runs of one job within a second from the same process get distinct files.
  std::string path = base;
  int fd = -1;
  for (int attempt = 0; attempt < 100; ++attempt) {
    path = attempt == 0 ? base : absl::StrCat(base, ".", attempt);
    fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_APPEND | O_CLOEXEC, 0644);
    if (fd >= 0 || errno != EEXIST) break;
  }
  if (fd < 0) {
    return absl::InternalError(
        absl::StrCat("cannot create TensorBoard event file ", path, ": ", std::strerror(errno)));
  }
  const int64_t every =
      total_steps > 0 ? (total_steps + kTensorBoardAmaxPoints - 1) / kTensorBoardAmaxPoints : 1;
  auto writer = std::unique_ptr<TensorBoardWriter>(
      new TensorBoardWriter(path, fd, every, total_steps));
  ProtoWriter event = EventHeader(0, WallTime(0));
  event.Bytes(kEventFileVersion, kFileVersion);
  if (absl::Status s = writer->Append(event.bytes()); !s.ok()) return s;
  return writer;
}

TensorBoardWriter::TensorBoardWriter(std::string path, int fd, int64_t amax_every,
                                     int64_t total_steps)
    : path_(std::move(path)), amax_every_(amax_every), total_steps_(total_steps), fd_(fd) {}

TensorBoardWriter::~TensorBoardWriter() {
  absl::MutexLock lock(&mu_);
  if (fd_ >= 0) ::close(fd_);
}

absl::Status TensorBoardWriter::Append(const std::string& event) {
  const std::string record = FrameTfRecord(event);
  absl::MutexLock lock(&mu_);
  size_t done = 0;
  while (done < record.size()) {
    const ssize_t n = ::write(fd_, record.data() + done, record.size() - done);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) {
      return absl::InternalError(
          absl::StrCat("cannot append to ", path_, ": ", std::strerror(errno)));
    }
    done += static_cast<size_t>(n);
  }
  return absl::OkStatus();
}

void TensorBoardWriter::Remember(const absl::Status& s) {
  if (s.ok()) return;
  absl::MutexLock lock(&mu_);
  if (status_.ok()) {
    spdlog::warn("TensorBoard events: {} (training goes on)", s.ToString());
    status_ = s;
  }
}

absl::Status TensorBoardWriter::status() const {
  absl::MutexLock lock(&mu_);
  return status_;
}

bool TensorBoardWriter::WritesAmaxAt(int64_t step) const {
  return step % amax_every_ == 0 || step == total_steps_;
}

absl::Status TensorBoardWriter::WriteScalars(
    int64_t step, double wall_time, const std::vector<std::pair<std::string, float>>& values) {
  ProtoWriter summary;
  for (const auto& [tag, value] : values) {
    ProtoWriter v;
    v.Bytes(kValueTag, tag);
    v.Float(kValueSimpleValue, value);
    summary.Message(kSummaryValue, v);
  }
  ProtoWriter event = EventHeader(step, wall_time);
  event.Message(kEventSummary, summary);
  return Append(event.bytes());
}

absl::Status TensorBoardWriter::WriteText(int64_t step, double wall_time, const std::string& tag,
                                          const std::string& text) {
  ProtoWriter plugin;
  plugin.Bytes(kPluginName, "text");
  ProtoWriter metadata;
  metadata.Message(kMetadataPluginData, plugin);
  ProtoWriter tensor;
  tensor.Varint(kTensorDtype, kDtString);
  tensor.Message(kTensorShape, ProtoWriter());
  tensor.Bytes(kTensorStringVal, text);
  ProtoWriter value;
  value.Bytes(kValueTag, tag);
  value.Message(kValueMetadata, metadata);
  value.Message(kValueTensor, tensor);
  ProtoWriter summary;
  summary.Message(kSummaryValue, value);
  ProtoWriter event = EventHeader(step, wall_time);
  event.Message(kEventSummary, summary);
  return Append(event.bytes());
}

absl::Status TensorBoardWriter::WriteSessionStart(int64_t step, double wall_time) {
  ProtoWriter session;
  session.Varint(kSessionLogStatus, kSessionStatusStart);
  ProtoWriter event = EventHeader(step, wall_time);
  event.Message(kEventSessionLog, session);
  return Append(event.bytes());
}

void TensorBoardWriter::OnMetric(const v1::MetricRecord& record) {
  const double wall = WallTime(record.unix_micros());
  switch (record.record_case()) {
    case v1::MetricRecord::kStep: {
      const v1::StepMetrics& m = record.step();
      Remember(WriteScalars(m.step(), wall,
                            {{"train/loss", m.loss()},
                             {"train/learning_rate", m.lr()},
                             {"train/grad_norm", m.grad_norm()},
                             {"train/tokens_per_sec", static_cast<float>(m.tokens_per_sec())},
                             {"train/model_tflops", static_cast<float>(m.model_tflops())},
                             {"train/mfu", static_cast<float>(m.mfu())},
                             {"train/step_time_ms", static_cast<float>(m.step_time_ms())},
                             {"train/memory_bytes", static_cast<float>(m.memory_bytes())},
                             {"train/skipped_steps", static_cast<float>(m.skipped_steps())},
                             {"train/tokens_seen", static_cast<float>(m.tokens_seen())},
                             {"recipe/version", static_cast<float>(m.recipe_version())},
                             {"recipe/fp8_layers", static_cast<float>(m.fp8_layers())}}));
      break;
    }
    case v1::MetricRecord::kEval: {
      const v1::EvalMetrics& e = record.eval();
      std::vector<std::pair<std::string, float>> values = {{"eval/loss", e.loss()}};
      if (e.bits_per_byte() > 0) values.emplace_back("eval/bits_per_byte", e.bits_per_byte());
      Remember(WriteScalars(e.step(), wall, values));
      break;
    }
    case v1::MetricRecord::kEvent: {
      const v1::Event& e = record.event();
      if (e.kind() == "resumed_from_checkpoint") {
        Remember(WriteSessionStart(e.step() + 1, wall));
      }
      Remember(WriteText(e.step(), wall, "events", EventText(e)));
      break;
    }
    default:
      break;
  }
}

void TensorBoardWriter::OnAmax(const v1::AmaxRecord& record) {
  if (!WritesAmaxAt(record.step())) return;
  std::vector<std::pair<std::string, float>> values;
  values.reserve(4 * record.tensors_size());
  for (const v1::TensorAmax& t : record.tensors()) {
    values.emplace_back(Fp8TensorTag("fp8_amax", t), t.amax());
    values.emplace_back(Fp8TensorTag("fp8_scale", t), t.scale());
    values.emplace_back(Fp8TensorTag("fp8_saturated", t), t.frac_saturated());
    values.emplace_back(Fp8TensorTag("fp8_underflow", t), t.frac_underflow());
  }
  Remember(WriteScalars(record.step(), WallTime(0), values));
}

}  // namespace fp8d
