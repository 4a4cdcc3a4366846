#include "core/safetensors.h"

#include <algorithm>
#include <bit>
#include <cmath>
#include <cstring>
#include <tuple>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/string_view.h"
#include "google/protobuf/struct.pb.h"
#include "google/protobuf/util/json_util.h"

namespace fp8d {
namespace {

static_assert(std::endian::native == std::endian::little,
              "safetensors data is little-endian; a big-endian host needs byte swaps here");

// The reference implementation refuses headers above 100 MB; so do we, before allocating.
constexpr int64_t kMaxHeaderBytes = 100'000'000;
// Data starts at a multiple of this (the format's alignment rule).
constexpr int64_t kDataAlignment = 8;
constexpr char kMetadataKey[] = "__metadata__";

void AppendJsonString(absl::string_view s, std::string* out) {
  out->push_back('"');
  for (unsigned char c : s) {
    switch (c) {
      case '"': out->append("\\\""); break;
      case '\\': out->append("\\\\"); break;
      case '\n': out->append("\\n"); break;
      case '\r': out->append("\\r"); break;
      case '\t': out->append("\\t"); break;
      default:
        if (c < 0x20) {
          absl::StrAppendFormat(out, "\\u%04x", c);
        } else {
          out->push_back(static_cast<char>(c));
        }
    }
  }
  out->push_back('"');
}

absl::Status ValidateTensor(const std::string& name, const HostTensor& t) {
  if (name.empty() || name == kMetadataKey) {
    return absl::InvalidArgumentError(absl::StrCat("tensor name '", name, "' is reserved or empty"));
  }
  for (int64_t d : t.shape) {
    if (d < 0) return absl::InvalidArgumentError(absl::StrCat("tensor ", name, " has a negative dimension"));
  }
  if (t.numel() != static_cast<int64_t>(t.data.size())) {
    return absl::InvalidArgumentError(absl::StrCat("tensor ", name, " has shape of ", t.numel(),
                                                   " elements but ", t.data.size(), " values"));
  }
  return absl::OkStatus();
}

int64_t DtypeBytes(absl::string_view dtype) {
  if (dtype == "F32") return 4;
  if (dtype == "BF16" || dtype == "F16") return 2;
  return 0;
}

float Bf16ToF32(uint16_t h) { return std::bit_cast<float>(static_cast<uint32_t>(h) << 16); }

float F16ToF32(uint16_t h) {
  const uint32_t sign = static_cast<uint32_t>(h & 0x8000) << 16;
  const int exp = (h >> 10) & 0x1F;
  const uint32_t mant = h & 0x3FF;
  if (exp == 0x1F) return std::bit_cast<float>(sign | 0x7F800000u | (mant << 13));  // inf / NaN
  if (exp == 0) {
    // Zero or subnormal: mant * 2^-24, exact in FP32.
    const float v = std::ldexp(static_cast<float>(mant), -24);
    return sign ? -v : v;
  }
  return std::bit_cast<float>(sign | (static_cast<uint32_t>(exp - 15 + 127) << 23) | (mant << 13));
}

absl::Status HeaderError(absl::string_view what) {
  return absl::DataLossError(absl::StrCat("safetensors header: ", what));
}

// A JSON number that must be a non-negative integer (shapes and offsets).
absl::StatusOr<int64_t> NonNegativeInt(const google::protobuf::Value& v, absl::string_view where) {
  if (v.kind_case() != google::protobuf::Value::kNumberValue) {
    return HeaderError(absl::StrCat(where, " is not a number"));
  }
  const double d = v.number_value();
  if (!(d >= 0) || d != std::floor(d) || d > 9007199254740992.0) {
    return HeaderError(absl::StrCat(where, " is not a non-negative integer"));
  }
  return static_cast<int64_t>(d);
}

absl::StatusOr<SafetensorsEntry> ParseEntry(const std::string& name,
                                            const google::protobuf::Value& value) {
  if (value.kind_case() != google::protobuf::Value::kStructValue) {
    return HeaderError(absl::StrCat("entry '", name, "' is not an object"));
  }
  const auto& f = value.struct_value().fields();
  SafetensorsEntry e;
  e.name = name;
  auto dtype = f.find("dtype");
  auto shape = f.find("shape");
  auto offsets = f.find("data_offsets");
  if (dtype == f.end() || dtype->second.kind_case() != google::protobuf::Value::kStringValue) {
    return HeaderError(absl::StrCat("tensor '", name, "' has no string dtype"));
  }
  e.dtype = dtype->second.string_value();
  if (shape == f.end() || shape->second.kind_case() != google::protobuf::Value::kListValue) {
    return HeaderError(absl::StrCat("tensor '", name, "' has no shape list"));
  }
  if (offsets == f.end() || offsets->second.kind_case() != google::protobuf::Value::kListValue ||
      offsets->second.list_value().values_size() != 2) {
    return HeaderError(absl::StrCat("tensor '", name, "' has no [begin, end] data_offsets"));
  }
  int64_t numel = 1;
  for (const auto& d : shape->second.list_value().values()) {
    absl::StatusOr<int64_t> dim = NonNegativeInt(d, absl::StrCat("a dimension of '", name, "'"));
    if (!dim.ok()) return dim.status();
    if (__builtin_mul_overflow(numel, *dim, &numel)) {
      return HeaderError(absl::StrCat("tensor '", name, "' shape overflows"));
    }
    e.shape.push_back(*dim);
  }
  absl::StatusOr<int64_t> begin = NonNegativeInt(offsets->second.list_value().values(0),
                                                 absl::StrCat("data_offsets of '", name, "'"));
  if (!begin.ok()) return begin.status();
  absl::StatusOr<int64_t> end = NonNegativeInt(offsets->second.list_value().values(1),
                                               absl::StrCat("data_offsets of '", name, "'"));
  if (!end.ok()) return end.status();
  e.begin = *begin;
  e.end = *end;
  const int64_t elem = DtypeBytes(e.dtype);
  if (elem == 0) {
    return absl::InvalidArgumentError(absl::StrCat("safetensors tensor '", name, "' has dtype ",
                                                   e.dtype, "; supported: F32, BF16, F16"));
  }
  int64_t bytes = 0;
  if (e.end < e.begin || __builtin_mul_overflow(numel, elem, &bytes) || e.end - e.begin != bytes) {
    return HeaderError(absl::StrCat("tensor '", name, "' data_offsets [", e.begin, ", ", e.end,
                                    "] do not hold ", numel, " ", e.dtype, " values"));
  }
  return e;
}

}  // namespace

int64_t SafetensorsDataBytes(const TensorMap& tensors) {
  int64_t n = 0;
  for (const auto& [name, t] : tensors) n += static_cast<int64_t>(t.data.size()) * 4;
  return n;
}

absl::StatusOr<std::string> SerializeSafetensorsHeader(
    const TensorMap& tensors, const std::map<std::string, std::string>& metadata) {
  std::string json = "{";
  bool first = true;
  if (!metadata.empty()) {
    AppendJsonString(kMetadataKey, &json);
    json.append(":{");
    for (const auto& [k, v] : metadata) {
      if (!first) json.push_back(',');
      first = false;
      AppendJsonString(k, &json);
      json.push_back(':');
      AppendJsonString(v, &json);
    }
    json.push_back('}');
    first = false;
  }
  int64_t offset = 0;
  for (const auto& [name, t] : tensors) {  // std::map: name order, so the bytes are deterministic
    if (absl::Status s = ValidateTensor(name, t); !s.ok()) return s;
    const int64_t bytes = static_cast<int64_t>(t.data.size()) * 4;
    if (!first) json.push_back(',');
    first = false;
    AppendJsonString(name, &json);
    json.append(":{\"dtype\":\"F32\",\"shape\":[");
    for (size_t i = 0; i < t.shape.size(); ++i) absl::StrAppend(&json, i ? "," : "", t.shape[i]);
    absl::StrAppend(&json, "],\"data_offsets\":[", offset, ",", offset + bytes, "]}");
    offset += bytes;
  }
  json.push_back('}');
  // Pad with spaces (valid JSON whitespace) so the data section starts 8-byte aligned.
  const int64_t unpadded = 8 + static_cast<int64_t>(json.size());
  json.append(static_cast<size_t>((kDataAlignment - unpadded % kDataAlignment) % kDataAlignment), ' ');
  if (static_cast<int64_t>(json.size()) > kMaxHeaderBytes) {
    return absl::InvalidArgumentError(absl::StrCat("safetensors header would be ", json.size(),
                                                   " bytes; the format allows ", kMaxHeaderBytes));
  }
  const uint64_t len = json.size();
  std::string out(8, '\0');
  std::memcpy(out.data(), &len, 8);
  out.append(json);
  return out;
}

absl::StatusOr<std::string> SerializeSafetensors(const TensorMap& tensors,
                                                 const std::map<std::string, std::string>& metadata) {
  absl::StatusOr<std::string> out = SerializeSafetensorsHeader(tensors, metadata);
  if (!out.ok()) return out.status();
  out->reserve(out->size() + SafetensorsDataBytes(tensors));
  for (const auto& [name, t] : tensors) {
    out->append(reinterpret_cast<const char*>(t.data.data()), t.data.size() * sizeof(float));
  }
  return out;
}

absl::StatusOr<int64_t> SafetensorsHeaderLength(std::string_view first8, int64_t file_size) {
  if (file_size < 8 || first8.size() < 8) {
    return absl::DataLossError(absl::StrCat("safetensors file is ", file_size,
                                            " bytes, shorter than its 8-byte header length"));
  }
  uint64_t len;
  std::memcpy(&len, first8.data(), 8);
  if (len > static_cast<uint64_t>(kMaxHeaderBytes) || static_cast<int64_t>(len) > file_size - 8) {
    return absl::DataLossError(absl::StrCat("safetensors header length ", len,
                                            " is impossible for a file of ", file_size, " bytes"));
  }
  return static_cast<int64_t>(len);
}

absl::StatusOr<SafetensorsHeader> ParseSafetensorsHeader(std::string_view prefix,
                                                         int64_t file_size) {
  absl::StatusOr<int64_t> len = SafetensorsHeaderLength(prefix, file_size);
  if (!len.ok()) return len.status();
  if (static_cast<int64_t>(prefix.size()) < 8 + *len) {
    return HeaderError(absl::StrCat("only ", prefix.size() - 8, " of ", *len, " bytes available"));
  }
  const std::string json(prefix.substr(8, *len));
  if (json.empty() || json[0] != '{') return HeaderError("does not start with '{'");
  google::protobuf::Struct root;
  if (auto s = google::protobuf::util::JsonStringToMessage(json, &root); !s.ok()) {
    return HeaderError(absl::StrCat("not valid JSON: ", std::string(s.message())));
  }
  SafetensorsHeader h;
  h.data_offset = 8 + *len;
  for (const auto& [key, value] : root.fields()) {
    if (key == kMetadataKey) {
      if (value.kind_case() != google::protobuf::Value::kStructValue) {
        return HeaderError("__metadata__ is not an object");
      }
      for (const auto& [k, v] : value.struct_value().fields()) {
        if (v.kind_case() != google::protobuf::Value::kStringValue) {
          return HeaderError(absl::StrCat("__metadata__ value '", k, "' is not a string"));
        }
        h.metadata[k] = v.string_value();
      }
      continue;
    }
    absl::StatusOr<SafetensorsEntry> e = ParseEntry(key, value);
    if (!e.ok()) return e.status();
    h.entries.push_back(*std::move(e));
  }
  std::sort(h.entries.begin(), h.entries.end(), [](const auto& a, const auto& b) {
    return std::tie(a.begin, a.end, a.name) < std::tie(b.begin, b.end, b.name);
  });
  // The format requires the offsets to tile the data section: no gaps, no overlap, nothing after.
  int64_t expect = 0;
  for (const SafetensorsEntry& e : h.entries) {
    if (e.begin != expect) {
      return HeaderError(absl::StrCat("tensor '", e.name, "' starts at data byte ", e.begin,
                                      "; expected ", expect, " (gap or overlap)"));
    }
    expect = e.end;
  }
  const int64_t data_bytes = file_size - h.data_offset;
  if (expect != data_bytes) {
    return absl::DataLossError(absl::StrCat("safetensors data section is ", data_bytes,
                                            " bytes but the header describes ", expect,
                                            expect > data_bytes ? " (truncated)" : " (trailing bytes)"));
  }
  return h;
}

absl::StatusOr<SafetensorsFile> ParseSafetensors(std::string_view bytes) {
  absl::StatusOr<SafetensorsHeader> h =
      ParseSafetensorsHeader(bytes, static_cast<int64_t>(bytes.size()));
  if (!h.ok()) return h.status();
  SafetensorsFile file;
  file.metadata = std::move(h->metadata);
  for (const SafetensorsEntry& e : h->entries) {
    HostTensor t;
    t.shape = e.shape;
    const char* p = bytes.data() + h->data_offset + e.begin;
    const int64_t n = t.numel();
    t.data.resize(n);
    if (e.dtype == "F32") {
      std::memcpy(t.data.data(), p, n * 4);
    } else {
      for (int64_t i = 0; i < n; ++i) {
        uint16_t v;
        std::memcpy(&v, p + 2 * i, 2);
        t.data[i] = e.dtype == "BF16" ? Bf16ToF32(v) : F16ToF32(v);
      }
    }
    file.tensors.emplace(e.name, std::move(t));
  }
  return file;
}

}  // namespace fp8d
