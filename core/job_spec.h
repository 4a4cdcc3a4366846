// Job files (YAML or JSON) to fp8d.v1.JobSpec, `--set key=value` overrides, and resolution of
// every default with range validation. The proto is the one schema: a file is read as YAML,
// checked field by field against the JobSpec descriptor (so errors name the file and the dotted
// field path), written out as JSON and parsed with protobuf's JSON mapping, which does the type
// conversion. Field names in files are the proto's snake_case names.
#pragma once

#include <string>
#include <string_view>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "fp8d/v1/job.pb.h"

namespace fp8d {

// Parses a job file's text. `source_name` (e.g. "demo.yaml") appears in every error:
// "unknown field `model.n_layers` in demo.yaml (line 3); allowed: preset, n_layer, ...".
// A file that is empty, not UTF-8 text (binary), larger than kMaxJobFileBytes, nested deeper
// than kMaxJobFileNesting, or holds more than one YAML document is INVALID_ARGUMENT saying so.
// Defaults are not filled in; call ResolveJobSpec for that.
absl::StatusOr<fp8d::v1::JobSpec> ParseJobText(std::string_view text,
                                               std::string_view source_name);

// Reads and parses a job file; NOT_FOUND when it cannot be read.
absl::StatusOr<fp8d::v1::JobSpec> ParseJobFile(const std::string& path);

// Applies one `dotted.key=value` override (`optimizer.lr=1e-3`, `recipe.name=delayed`,
// `recipe.policy.include=layers\.0\..*`) through the same mapping as a file, so names and types
// are checked by the schema. A repeated field takes a YAML list (`[a, b]`) or a single value;
// an empty value clears the field. On error `spec` is unchanged.
absl::Status ApplySetOverride(fp8d::v1::JobSpec* spec, std::string_view dotted_eq_value);

// Fills every default documented in proto/fp8d/v1/job.proto, resolves the model (preset plus
// overrides) and the recipe, and validates every range. INVALID_ARGUMENT names the field and
// what is allowed ("batch_size = 0 is out of range: allowed 1..4096").
absl::StatusOr<fp8d::v1::JobSpec> ResolveJobSpec(const fp8d::v1::JobSpec& spec);

inline constexpr size_t kMaxJobFileBytes = 1 << 20;
inline constexpr int kMaxJobFileNesting = 64;

// Limits checked by ResolveJobSpec.
inline constexpr int kMaxBatchSize = 4096;
inline constexpr int kMaxGradAccum = 65536;
inline constexpr int kDefaultBatchSize = 8;
inline constexpr int kDefaultSeqLen = 256;
inline constexpr int kDefaultEvalBatches = 4;
inline constexpr uint64_t kDefaultSeed = 1337;
inline constexpr float kDefaultLr = 3e-4f;

}  // namespace fp8d
