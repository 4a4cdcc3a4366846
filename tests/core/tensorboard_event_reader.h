// Reads TensorBoard event files back for tests: TFRecord framing through core/tfrecord.h, and the
// tensorboard.Event messages decoded field by field with protobuf's generic wire-format parser
// (field numbers from tensorboard/compat/proto), independently of the writer's encoder.
#pragma once

#include <cstdint>
#include <algorithm>
#include <cstring>
#include <filesystem>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "core/tensorboard_writer.h"
#include "core/tfrecord.h"
#include "google/protobuf/unknown_field_set.h"
#include "gtest/gtest.h"

namespace fp8d {
namespace tensorboard_test {

using google::protobuf::UnknownField;
using google::protobuf::UnknownFieldSet;

// A decoded tensorboard.Event: the fields the writer sets.
struct DecodedEvent {
  double wall_time = 0;
  int64_t step = 0;
  std::string file_version;
  std::map<std::string, float> scalars;         // Summary.Value tag -> simple_value
  std::map<std::string, std::string> texts;     // tag -> the string tensor's value
  std::map<std::string, std::string> plugins;   // tag -> metadata.plugin_data.plugin_name
  int session_status = -1;
};

inline const UnknownField* Field(const UnknownFieldSet& set, int number, int occurrence = 0) {
  for (int i = 0; i < set.field_count(); ++i) {
    if (set.field(i).number() == number && occurrence-- == 0) return &set.field(i);
  }
  return nullptr;
}

inline std::unique_ptr<UnknownFieldSet> Parse(const std::string& bytes) {
  auto set = std::make_unique<UnknownFieldSet>();
  EXPECT_TRUE(set->ParseFromString(bytes));
  return set;
}

inline DecodedEvent Decode(const std::string& record) {
  DecodedEvent e;
  const auto event_set = Parse(record);
  const UnknownFieldSet& event = *event_set;
  if (const auto* f = Field(event, 1)) {
    const uint64_t bits = f->fixed64();
    std::memcpy(&e.wall_time, &bits, 8);
  }
  if (const auto* f = Field(event, 2)) e.step = static_cast<int64_t>(f->varint());
  if (const auto* f = Field(event, 3)) e.file_version = f->length_delimited();
  if (const auto* f = Field(event, 7)) {
    const auto session = Parse(f->length_delimited());
    if (const auto* s = Field(*session, 1)) e.session_status = static_cast<int>(s->varint());
  }
  if (const auto* f = Field(event, 5)) {
    const auto summary = Parse(f->length_delimited());
    for (int i = 0; const auto* v = Field(*summary, 1, i); ++i) {
      const auto value_set = Parse(v->length_delimited());
      const UnknownFieldSet& value = *value_set;
      const std::string tag = Field(value, 1)->length_delimited();
      if (const auto* simple = Field(value, 2)) {
        const uint32_t bits = simple->fixed32();
        float x;
        std::memcpy(&x, &bits, 4);
        e.scalars[tag] = x;
      }
      if (const auto* tensor = Field(value, 8)) {
        const auto t = Parse(tensor->length_delimited());
        EXPECT_EQ(Field(*t, 1)->varint(), 7u) << "DT_STRING";
        e.texts[tag] = Field(*t, 8)->length_delimited();
      }
      if (const auto* meta = Field(value, 9)) {
        const auto metadata = Parse(meta->length_delimited());
        const auto plugin = Parse(Field(*metadata, 1)->length_delimited());
        e.plugins[tag] = Field(*plugin, 1)->length_delimited();
      }
    }
  }
  return e;
}

// Every event of every event file in `dir`, file by file in name order.
inline std::vector<DecodedEvent> ReadEvents(const std::string& dir) {
  std::vector<DecodedEvent> events;
  std::vector<std::string> files;
  for (const auto& entry : std::filesystem::directory_iterator(dir)) {
    const std::string name = entry.path().filename().string();
    if (name.rfind(kTensorBoardFilePrefix, 0) == 0) files.push_back(entry.path().string());
  }
  std::sort(files.begin(), files.end());
  for (const std::string& file : files) {
    auto read = ReadTfRecordFile(file);
    if (!read.ok()) {
      ADD_FAILURE() << read.status();
      continue;
    }
    EXPECT_FALSE(read->torn_tail) << file;
    for (const auto& r : read->records) events.push_back(Decode(r));
  }
  return events;
}

}  // namespace tensorboard_test
}  // namespace fp8d
