// `fp8ctl compare`: what a run achieved, from its job and its metric log (final and best eval
// loss, final training loss, median tokens/s and MFU, the recipes it ran with and from which
// step), rendered side by side as a table or as one JSON array.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "fp8d/v1/telemetry.pb.h"
#include "fp8d/v1/trainer.pb.h"

namespace fp8d::client {

struct RecipeSpan {
  int64_t from_step = 0;   // the first step that ran with it
  int32_t version = 0;
  std::string name;
};

struct RunSummary {
  fp8d::v1::Job job;
  int64_t last_step = 0;
  float final_train_loss = 0;
  bool has_eval = false;
  float final_eval_loss = 0;
  int64_t final_eval_step = 0;
  float best_eval_loss = 0;
  int64_t best_eval_step = 0;
  double median_tokens_per_sec = 0;
  double median_mfu = 0;
  std::vector<RecipeSpan> recipes;
};

RunSummary SummarizeRun(const fp8d::v1::Job& job,
                        const std::vector<fp8d::v1::MetricRecord>& records);

// One column per run; `now_micros` measures the elapsed time of runs still going.
std::string CompareTable(const std::vector<RunSummary>& runs, int64_t now_micros);
std::string CompareJson(const std::vector<RunSummary>& runs);

}  // namespace fp8d::client
