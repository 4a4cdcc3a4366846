// fp8d-metrics: prints the metric log or the amax log of a run, offline, as CSV or JSON lines.
//
//   fp8d-metrics RUN_DIR (--csv | --json) [--amax] [--from-step N]
//
// RUN_DIR is fp8d-train's output directory (runs/NAME) or a daemon job's directory
// (STATE_DIR/jobs/JOB). Without --amax: one line per metric record (steps, evals, events); with
// --amax: per FP8 tensor and step (CSV) or per step (JSON). Floats print with 9 significant
// digits, so every value reads back exactly as logged.
#include <cstdio>
#include <filesystem>
#include <string>
#include <vector>

#include "CLI/CLI.hpp"
#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_replace.h"
#include "core/metric_log.h"
#include "google/protobuf/util/json_util.h"

#ifndef FP8D_VERSION
#define FP8D_VERSION "dev"
#endif

namespace fp8d {
namespace {

namespace v1 = fp8d::v1;
constexpr size_t kPageRecords = 4096;  // records held in memory at a time

constexpr char kMetricCsvHeader[] =
    "seq,unix_micros,kind,step,total_steps,loss,lr,grad_norm,tokens_per_sec,model_tflops,mfu,"
    "step_time_ms,memory_bytes,recipe_name,recipe_version,fp8_layers,total_layers,"
    "skipped_steps,tokens_seen,eval_loss,bits_per_byte,event,message";
constexpr char kAmaxCsvHeader[] =
    "step,recipe_version,layer,role,format,amax,scale,frac_saturated,frac_underflow";

std::string CsvField(const std::string& s) {
  if (s.find_first_of(",\"\n\r") == std::string::npos) return s;
  return absl::StrCat("\"", absl::StrReplaceAll(s, {{"\"", "\"\""}}), "\"");
}

std::string Json(const google::protobuf::Message& m) {
  std::string out;
  google::protobuf::util::JsonPrintOptions options;
  options.preserve_proto_field_names = true;
  (void)google::protobuf::util::MessageToJsonString(m, &out, options);
  return out;
}

// Columns of kMetricCsvHeader; a record fills those of its kind and leaves the rest empty.
enum MetricColumn {
  kSeq, kUnixMicros, kKind, kStep, kTotalSteps, kLoss, kLr, kGradNorm, kTokensPerSec,
  kModelTflops, kMfu, kStepTimeMs, kMemoryBytes, kRecipeName, kRecipeVersion, kFp8Layers,
  kTotalLayers, kSkippedSteps, kTokensSeen, kEvalLoss, kBitsPerByte, kEvent, kMessage,
  kMetricColumns
};

std::string F(float v) { return absl::StrFormat("%.9g", v); }
std::string D(double v) { return absl::StrFormat("%.17g", v); }

void PrintMetricCsv(const v1::MetricRecord& r) {
  std::vector<std::string> c(kMetricColumns);
  c[kSeq] = absl::StrCat(r.seq());
  c[kUnixMicros] = absl::StrCat(r.unix_micros());
  switch (r.record_case()) {
    case v1::MetricRecord::kStep: {
      const v1::StepMetrics& s = r.step();
      c[kKind] = "step";
      c[kStep] = absl::StrCat(s.step());
      c[kTotalSteps] = absl::StrCat(s.total_steps());
      c[kLoss] = F(s.loss());
      c[kLr] = F(s.lr());
      c[kGradNorm] = F(s.grad_norm());
      c[kTokensPerSec] = D(s.tokens_per_sec());
      c[kModelTflops] = D(s.model_tflops());
      c[kMfu] = D(s.mfu());
      c[kStepTimeMs] = D(s.step_time_ms());
      c[kMemoryBytes] = absl::StrCat(s.memory_bytes());
      c[kRecipeName] = CsvField(s.recipe_name());
      c[kRecipeVersion] = absl::StrCat(s.recipe_version());
      c[kFp8Layers] = absl::StrCat(s.fp8_layers());
      c[kTotalLayers] = absl::StrCat(s.total_layers());
      c[kSkippedSteps] = absl::StrCat(s.skipped_steps());
      c[kTokensSeen] = absl::StrCat(s.tokens_seen());
      break;
    }
    case v1::MetricRecord::kEval:
      c[kKind] = "eval";
      c[kStep] = absl::StrCat(r.eval().step());
      c[kEvalLoss] = F(r.eval().loss());
      c[kBitsPerByte] = F(r.eval().bits_per_byte());
      break;
    case v1::MetricRecord::kEvent: {
      const v1::Event& e = r.event();
      c[kKind] = "event";
      c[kStep] = absl::StrCat(e.step());
      if (e.kind() == "recipe_changed") c[kRecipeName] = CsvField(e.recipe().name());
      c[kRecipeVersion] = absl::StrCat(e.recipe_version());
      c[kEvent] = CsvField(e.kind());
      c[kMessage] = CsvField(e.message());
      break;
    }
    default:
      return;
  }
  std::printf("%s\n", absl::StrJoin(c, ",").c_str());
}

void PrintAmaxCsv(const v1::AmaxRecord& r) {
  for (const v1::TensorAmax& t : r.tensors()) {
    std::printf("%s\n", absl::StrFormat("%d,%d,%s,%s,%s,%.9g,%.9g,%.9g,%.9g", r.step(),
                                        r.recipe_version(), CsvField(t.layer()),
                                        absl::AsciiStrToLower(v1::TensorRole_Name(t.role())),
                                        t.format(), t.amax(), t.scale(), t.frac_saturated(),
                                        t.frac_underflow())
                            .c_str());
  }
}

// Pages through one log; `print` gets every record. Errors name the file.
template <typename Read, typename Print>
int PrintLog(const std::string& path, Read read, Print print) {
  int64_t offset = 0;
  while (true) {
    auto page = read(path, offset);
    if (!page.ok()) {
      std::fprintf(stderr, "fp8d-metrics: %s\n", page.status().ToString().c_str());
      return 1;
    }
    for (const auto& r : page->records) print(r);
    offset = page->next_offset;
    if (page->records.size() < kPageRecords) break;
  }
  return 0;
}

int Main(int argc, char** argv) {
  CLI::App app("Prints a run's metric log (steps, evals, events) or its amax log (--amax).",
               "fp8d-metrics");
  std::string run_dir;
  bool csv = false, json = false, amax = false;
  int64_t from_step = 0;
  app.add_option("RUN_DIR", run_dir,
                 "fp8d-train's output dir (runs/NAME) or a daemon job dir (STATE_DIR/jobs/JOB)")
      ->required();
  auto* csv_flag = app.add_flag("--csv", csv, "CSV with a header line");
  app.add_flag("--json", json, "one JSON object per line (the proto's JSON mapping)")
      ->excludes(csv_flag);
  app.add_flag("--amax", amax, "the FP8 amax log instead of the metric log");
  app.add_option("--from-step", from_step, "records of this step and later")
      ->check(CLI::NonNegativeNumber);
  app.set_version_flag("--version", std::string("fp8d-metrics ") + FP8D_VERSION);
  try {
    app.parse(argc, argv);
    if (!csv && !json) throw CLI::RequiredError("--csv or --json");
  } catch (const CLI::ParseError& e) {
    if (e.get_exit_code() == 0) return app.exit(e);
    std::fprintf(stderr, "fp8d-metrics: %s\nRun `fp8d-metrics --help` for the options.\n",
                 e.what());
    return 2;
  }
  const std::filesystem::path dir(run_dir);
  if (!std::filesystem::is_directory(dir)) {
    std::fprintf(stderr, "fp8d-metrics: RUN_DIR `%s` is not a directory\n", run_dir.c_str());
    return 1;
  }
  if (amax) {
    if (csv) std::printf("%s\n", kAmaxCsvHeader);
    return PrintLog(
        (dir / kAmaxLogFile).string(),
        [&](const std::string& path, int64_t offset) {
          return ReadAmaxLog(path, from_step, offset, kPageRecords);
        },
        [&](const v1::AmaxRecord& r) {
          if (csv) {
            PrintAmaxCsv(r);
          } else {
            std::printf("%s\n", Json(r).c_str());
          }
        });
  }
  if (csv) std::printf("%s\n", kMetricCsvHeader);
  return PrintLog(
      (dir / kMetricLogFile).string(),
      [&](const std::string& path, int64_t offset) {
        return ReadMetricLog(path, 0, from_step, offset, kPageRecords);
      },
      [&](const v1::MetricRecord& r) {
        if (csv) {
          PrintMetricCsv(r);
        } else {
          std::printf("%s\n", Json(r).c_str());
        }
      });
}

}  // namespace
}  // namespace fp8d

int main(int argc, char** argv) { return fp8d::Main(argc, argv); }
