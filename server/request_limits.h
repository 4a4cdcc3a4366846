// Bounds on everything a client sends, checked on every request before any work: each string
// field (and bytes field) has a length limit and each repeated field a count limit, found by
// walking the message with protobuf reflection, so a field added to the schema is bounded too.
// A job's stored record, every response that carries it (GetJob, ListJobs pages) and every
// message in its logs therefore stay small, whatever clients send.
#pragma once

#include <cstddef>
#include <string>

#include "absl/status/status.h"
#include "google/protobuf/message.h"

namespace fp8d {

inline constexpr size_t kMaxStringFieldBytes = 4096;     // any string not listed below (paths)
inline constexpr size_t kMaxNameFieldBytes = 256;        // JobSpec.name, resource names, ids
inline constexpr size_t kMaxSpecTextBytes = 1 << 20;     // a job file's text
inline constexpr int kMaxRepeatedFieldEntries = 256;     // e.g. SubmitJobRequest.set

// INVALID_ARGUMENT naming the field path ("spec.name is 2500000 bytes: allowed at most 256").
// `prefix` is put in front of field paths ("spec" when checking a parsed JobSpec).
absl::Status CheckRequestBounds(const google::protobuf::Message& message,
                                const std::string& prefix = "");

}  // namespace fp8d
