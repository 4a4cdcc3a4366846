// A small streaming JSON writer for the dashboard's HTTP API: objects, arrays, strings (escaped
// for JSON and safe inside HTML), integers and numbers. Non-finite numbers (a NaN loss of a
// skipped step) become null, since JSON has no NaN; floats print with 9 significant digits and
// doubles with 17, so a reader gets back the exact value that was logged.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "absl/strings/string_view.h"

namespace fp8d {

class JsonWriter {
 public:
  JsonWriter& BeginObject();
  JsonWriter& EndObject();
  JsonWriter& BeginArray();
  JsonWriter& EndArray();
  JsonWriter& Key(absl::string_view key);
  JsonWriter& String(absl::string_view value);
  JsonWriter& Int(int64_t value);
  JsonWriter& Bool(bool value);
  JsonWriter& Float(float value);
  JsonWriter& Double(double value);
  JsonWriter& Null();

  const std::string& str() const { return out_; }

 private:
  void Separate();
  std::string out_;
  // Per open container: whether it has a member yet; after Key() the value needs no comma.
  std::vector<bool> has_member_;
  bool after_key_ = false;
};

// `value` as a JSON string literal, quotes included.
std::string JsonQuote(absl::string_view value);

}  // namespace fp8d
