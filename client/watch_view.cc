#include "client/watch_view.h"

#include <algorithm>
#include <cmath>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"

namespace fp8d::client {
namespace {

constexpr size_t kSparkWidth = 48;   // losses shown in the sparkline
constexpr int kBarWidth = 30;        // characters of the progress bar
constexpr double kEtaSmoothing = 0.2;  // weight of the newest step time in the ETA average

std::string Rate(double tokens_per_sec) {
  if (tokens_per_sec >= 1e6) return absl::StrFormat("%.2fM", tokens_per_sec / 1e6);
  if (tokens_per_sec >= 1e3) return absl::StrFormat("%.1fk", tokens_per_sec / 1e3);
  return absl::StrFormat("%.0f", tokens_per_sec);
}

}  // namespace

WatchView::WatchView(std::string job, bool tty) : job_(std::move(job)), tty_(tty) {}

std::string WatchView::Sparkline(const std::deque<float>& values) {
  static const char* kBlocks[] = {"▁", "▂", "▃", "▄", "▅", "▆", "▇", "█"};
  if (values.empty()) return "";
  const auto [lo, hi] = std::minmax_element(values.begin(), values.end());
  const float span = *hi - *lo;
  std::string out;
  for (float v : values) {
    int level = span > 0 ? static_cast<int>(std::lround((v - *lo) / span * 7.f)) : 3;
    out += kBlocks[std::clamp(level, 0, 7)];
  }
  return out;
}

std::string WatchView::FormatDuration(double seconds) {
  if (!(seconds >= 0) || seconds > 1e8) return "--:--";
  const int64_t s = static_cast<int64_t>(std::llround(seconds));
  if (s >= 3600) return absl::StrFormat("%d:%02d:%02d", s / 3600, (s / 60) % 60, s % 60);
  return absl::StrFormat("%d:%02d", s / 60, s % 60);
}

std::string WatchView::EventLine(const fp8d::v1::Event& event) {
  std::string line = absl::StrCat("[step ", event.step(), "] ", event.kind());
  if (event.kind() == "recipe_changed") {
    absl::StrAppend(&line, ": ", event.recipe().name(), " v", event.recipe_version(),
                    event.amax_handling() == fp8d::v1::AMAX_RESET ? " (amax reset)"
                                                                   : " (amax kept)");
  }
  if (!event.message().empty()) {
    absl::StrAppend(&line, ": ", event.message());
  } else if (!event.checkpoint().empty()) {
    absl::StrAppend(&line, ": ", event.checkpoint());
  }
  return line;
}

std::string WatchView::PlainStepLine(const fp8d::v1::StepMetrics& s) const {
  const double eta = step_ms_ema_ * static_cast<double>(s.total_steps() - s.step()) / 1e3;
  return absl::StrFormat(
      "step %d/%d loss %.4f lr %.3e tok/s %s recipe %s v%d fp8 %d/%d eta %s", s.step(),
      s.total_steps(), s.loss(), s.lr(), Rate(s.tokens_per_sec()), s.recipe_name(),
      s.recipe_version(), s.fp8_layers(), s.total_layers(), FormatDuration(eta));
}

std::string WatchView::StatusBlock() const {
  const auto& s = last_;
  const double frac = s.total_steps() > 0
                          ? std::clamp(static_cast<double>(s.step()) / s.total_steps(), 0.0, 1.0)
                          : 0.0;
  const int filled = static_cast<int>(frac * kBarWidth);
  std::string bar;
  for (int i = 0; i < kBarWidth; ++i) bar += i < filled ? "█" : "░";
  const double eta = step_ms_ema_ * static_cast<double>(s.total_steps() - s.step()) / 1e3;
  std::string block = absl::StrFormat("%s  %s %3.0f%%  step %d/%d  ETA %s\n", job_, bar,
                                      frac * 100, s.step(), s.total_steps(), FormatDuration(eta));
  absl::StrAppend(&block,
                  absl::StrFormat("loss %.4f  lr %.3e  %s tok/s  recipe %s v%d  FP8 %d/%d layers%s\n",
                                  s.loss(), s.lr(), Rate(s.tokens_per_sec()), s.recipe_name(),
                                  s.recipe_version(), s.fp8_layers(), s.total_layers(),
                                  last_eval_.empty() ? "" : absl::StrCat("  ", last_eval_)));
  absl::StrAppend(&block, "loss ", Sparkline(losses_), "\n");
  return block;
}

std::string WatchView::Redraw(const std::string& above) {
  std::string out;
  // Move to the top of the old block and clear it, print what scrolls, then the new block.
  if (drawn_lines_ > 0) absl::StrAppend(&out, "\033[", drawn_lines_, "A");
  absl::StrAppend(&out, "\r\033[J", above);
  if (have_step_) {
    std::string block = StatusBlock();
    drawn_lines_ = static_cast<int>(std::count(block.begin(), block.end(), '\n'));
    absl::StrAppend(&out, block);
  } else {
    drawn_lines_ = 0;
  }
  return out;
}

std::string WatchView::OnRecord(const fp8d::v1::MetricRecord& record) {
  switch (record.record_case()) {
    case fp8d::v1::MetricRecord::kStep: {
      const auto& s = record.step();
      step_ms_ema_ = have_step_ ? (1 - kEtaSmoothing) * step_ms_ema_ + kEtaSmoothing * s.step_time_ms()
                                : s.step_time_ms();
      last_ = s;
      have_step_ = true;
      losses_.push_back(s.loss());
      while (losses_.size() > kSparkWidth) losses_.pop_front();
      return tty_ ? Redraw("") : PlainStepLine(s) + "\n";
    }
    case fp8d::v1::MetricRecord::kEval: {
      const auto& e = record.eval();
      last_eval_ = absl::StrFormat("eval %.4f (%.3f bpb)", e.loss(), e.bits_per_byte());
      std::string line = absl::StrFormat("[step %d] eval loss %.4f bits/byte %.4f\n", e.step(),
                                         e.loss(), e.bits_per_byte());
      return tty_ ? Redraw(line) : line;
    }
    case fp8d::v1::MetricRecord::kEvent: {
      std::string line = EventLine(record.event()) + "\n";
      return tty_ ? Redraw(line) : line;
    }
    default:
      return "";
  }
}

std::string WatchView::Finish() { return ""; }

}  // namespace fp8d::client
