#include "server/request_limits.h"

#include <vector>

#include "absl/strings/str_cat.h"
#include "google/protobuf/descriptor.h"
#include "google/protobuf/reflection.h"

namespace fp8d {
namespace {

using google::protobuf::FieldDescriptor;
using google::protobuf::Message;
using google::protobuf::Reflection;

size_t LimitOf(const FieldDescriptor* f) {
  const std::string& name = f->full_name();
  if (name == "fp8d.v1.SubmitJobRequest.spec_text") return kMaxSpecTextBytes;
  // Names and ids: short by nature, and copied into job ids, logs and every listing.
  if (f->name() == "name" || f->name() == "request_id" || f->name() == "page_token" ||
      f->name() == "spec_file" || f->name() == "checkpoint") {
    return kMaxNameFieldBytes;
  }
  return kMaxStringFieldBytes;
}

std::string Join(const std::string& prefix, const std::string& field) {
  return prefix.empty() ? field : absl::StrCat(prefix, ".", field);
}

absl::Status CheckString(const FieldDescriptor* f, const std::string& value,
                         const std::string& path) {
  const size_t limit = LimitOf(f);
  if (value.size() > limit) {
    return absl::InvalidArgumentError(absl::StrCat(path, " is ", value.size(),
                                                   " bytes: allowed at most ", limit));
  }
  return absl::OkStatus();
}

}  // namespace

absl::Status CheckRequestBounds(const Message& message, const std::string& prefix) {
  const Reflection* reflection = message.GetReflection();
  std::vector<const FieldDescriptor*> fields;
  reflection->ListFields(message, &fields);
  for (const FieldDescriptor* f : fields) {
    const std::string path = Join(prefix, f->name());
    if (f->is_repeated()) {
      const int n = reflection->FieldSize(message, f);
      if (n > kMaxRepeatedFieldEntries) {
        return absl::InvalidArgumentError(absl::StrCat(path, " has ", n,
                                                       " entries: allowed at most ",
                                                       kMaxRepeatedFieldEntries));
      }
      for (int i = 0; i < n; ++i) {
        const std::string item = absl::StrCat(path, "[", i, "]");
        if (f->cpp_type() == FieldDescriptor::CPPTYPE_STRING) {
          std::string scratch;
          const std::string& v = reflection->GetRepeatedStringReference(message, f, i, &scratch);
          if (absl::Status s = CheckString(f, v, item); !s.ok()) return s;
        } else if (f->cpp_type() == FieldDescriptor::CPPTYPE_MESSAGE) {
          const Message& m = reflection->GetRepeatedMessage(message, f, i);
          if (absl::Status s = CheckRequestBounds(m, item); !s.ok()) return s;
        }
      }
    } else if (f->cpp_type() == FieldDescriptor::CPPTYPE_STRING) {
      std::string scratch;
      const std::string& v = reflection->GetStringReference(message, f, &scratch);
      if (absl::Status s = CheckString(f, v, path); !s.ok()) return s;
    } else if (f->cpp_type() == FieldDescriptor::CPPTYPE_MESSAGE) {
      if (absl::Status s = CheckRequestBounds(reflection->GetMessage(message, f), path); !s.ok()) {
        return s;
      }
    }
  }
  return absl::OkStatus();
}

}  // namespace fp8d
