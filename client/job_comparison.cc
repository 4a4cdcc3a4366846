#include "client/job_comparison.h"

#include <algorithm>
#include <cmath>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "client/watch_view.h"

namespace fp8d::client {
namespace {

namespace v1 = fp8d::v1;

double Median(std::vector<double> v) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

std::string Rate(double tokens_per_sec) {
  if (tokens_per_sec >= 1e6) return absl::StrFormat("%.2fM", tokens_per_sec / 1e6);
  if (tokens_per_sec >= 1e3) return absl::StrFormat("%.1fk", tokens_per_sec / 1e3);
  return absl::StrFormat("%.0f", tokens_per_sec);
}

std::string RecipeHistory(const RunSummary& r) {
  std::vector<std::string> parts;
  for (const RecipeSpan& s : r.recipes) {
    parts.push_back(s.from_step <= 1 ? absl::StrCat(s.name, " v", s.version)
                                     : absl::StrCat(s.name, " v", s.version, " @", s.from_step));
  }
  return parts.empty() ? "-" : absl::StrJoin(parts, " -> ");
}

double ElapsedSeconds(const v1::Job& job, int64_t now_micros) {
  if (job.start_unix_micros() == 0) return -1;
  const int64_t end = job.end_unix_micros() > 0 ? job.end_unix_micros() : now_micros;
  return (end - job.start_unix_micros()) / 1e6;
}

std::string Json(const std::string& s) {
  std::string out = "\"";
  for (char c : s) {
    if (c == '"' || c == '\\') out += '\\';
    if (static_cast<unsigned char>(c) < 0x20) {
      absl::StrAppendFormat(&out, "\\u%04x", static_cast<unsigned char>(c));
      continue;
    }
    out += c;
  }
  return out + "\"";
}

std::string JsonNumber(double v) {
  return std::isfinite(v) ? absl::StrFormat("%.9g", v) : "null";
}

}  // namespace

RunSummary SummarizeRun(const v1::Job& job, const std::vector<v1::MetricRecord>& records) {
  RunSummary r;
  r.job = job;
  std::vector<double> rates, mfus;
  for (const v1::MetricRecord& rec : records) {
    if (rec.has_step()) {
      const v1::StepMetrics& s = rec.step();
      r.last_step = s.step();
      r.final_train_loss = s.loss();
      rates.push_back(s.tokens_per_sec());
      mfus.push_back(s.mfu());
      if (r.recipes.empty() || r.recipes.back().version != s.recipe_version()) {
        r.recipes.push_back({s.step(), s.recipe_version(), s.recipe_name()});
      }
    } else if (rec.has_eval()) {
      const v1::EvalMetrics& e = rec.eval();
      if (!r.has_eval || e.loss() < r.best_eval_loss) {
        r.best_eval_loss = e.loss();
        r.best_eval_step = e.step();
      }
      r.has_eval = true;
      r.final_eval_loss = e.loss();
      r.final_eval_step = e.step();
    }
  }
  r.median_tokens_per_sec = Median(rates);
  r.median_mfu = Median(mfus);
  return r;
}

std::string CompareTable(const std::vector<RunSummary>& runs, int64_t now_micros) {
  const std::vector<std::string> labels = {
      "job",           "state",           "steps",         "final eval loss",
      "best eval loss", "final train loss", "tokens/s (median)", "MFU (median)",
      "recipes",        "elapsed"};
  std::vector<std::vector<std::string>> columns;
  for (const RunSummary& r : runs) {
    const double elapsed = ElapsedSeconds(r.job, now_micros);
    columns.push_back({
        r.job.name().substr(5),
        v1::JobState_Name(r.job.state()),
        absl::StrCat(r.last_step, "/", r.job.total_steps()),
        r.has_eval ? absl::StrFormat("%.4f @%d", r.final_eval_loss, r.final_eval_step) : "-",
        r.has_eval ? absl::StrFormat("%.4f @%d", r.best_eval_loss, r.best_eval_step) : "-",
        r.last_step > 0 ? absl::StrFormat("%.4f", r.final_train_loss) : "-",
        r.last_step > 0 ? Rate(r.median_tokens_per_sec) : "-",
        r.median_mfu > 0 ? absl::StrFormat("%.1f%%", 100 * r.median_mfu) : "-",
        RecipeHistory(r),
        elapsed < 0 ? "-" : WatchView::FormatDuration(elapsed),
    });
  }
  size_t label_width = 0;
  for (const auto& l : labels) label_width = std::max(label_width, l.size());
  std::vector<size_t> widths;
  for (const auto& col : columns) {
    size_t w = 0;
    for (const auto& v : col) w = std::max(w, v.size());
    widths.push_back(w);
  }
  std::string out;
  for (size_t row = 0; row < labels.size(); ++row) {
    std::string line = absl::StrFormat("%-*s", static_cast<int>(label_width), labels[row]);
    for (size_t c = 0; c < columns.size(); ++c) {
      absl::StrAppendFormat(&line, "  %-*s", static_cast<int>(widths[c]), columns[c][row]);
    }
    while (!line.empty() && line.back() == ' ') line.pop_back();
    absl::StrAppend(&out, line, "\n");
  }
  return out;
}

std::string CompareJson(const std::vector<RunSummary>& runs) {
  std::vector<std::string> objects;
  for (const RunSummary& r : runs) {
    std::vector<std::string> recipes;
    for (const RecipeSpan& s : r.recipes) {
      recipes.push_back(absl::StrCat("{\"from_step\":", s.from_step, ",\"version\":", s.version,
                                     ",\"name\":", Json(s.name), "}"));
    }
    std::string o = absl::StrCat(
        "{\"job\":", Json(r.job.name()), ",\"state\":", Json(v1::JobState_Name(r.job.state())),
        ",\"step\":", r.last_step, ",\"total_steps\":", r.job.total_steps());
    if (r.has_eval) {
      absl::StrAppend(&o, ",\"final_eval_loss\":", JsonNumber(r.final_eval_loss),
                      ",\"final_eval_step\":", r.final_eval_step,
                      ",\"best_eval_loss\":", JsonNumber(r.best_eval_loss),
                      ",\"best_eval_step\":", r.best_eval_step);
    }
    absl::StrAppend(&o, ",\"final_train_loss\":", JsonNumber(r.final_train_loss),
                    ",\"median_tokens_per_sec\":", JsonNumber(r.median_tokens_per_sec),
                    ",\"median_mfu\":", JsonNumber(r.median_mfu), ",\"recipes\":[",
                    absl::StrJoin(recipes, ","), "]}");
    objects.push_back(o);
  }
  return absl::StrCat("[", absl::StrJoin(objects, ","), "]\n");
}

}  // namespace fp8d::client
