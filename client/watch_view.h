// The live view of `fp8ctl watch`: progress bar with ETA, loss, learning rate, tokens/s, a loss
// sparkline, the active recipe and FP8 layer count, and events as they happen. On a terminal the
// status block is redrawn in place (events scroll above it); otherwise each record becomes one
// plain line, so logs and pipes stay readable.
#pragma once

#include <deque>
#include <string>

#include "fp8d/v1/telemetry.pb.h"

namespace fp8d::client {

class WatchView {
 public:
  // `job` labels the view; `tty` selects in-place redraw.
  WatchView(std::string job, bool tty);

  // Text to write for this record (possibly empty).
  std::string OnRecord(const fp8d::v1::MetricRecord& record);
  // Text that leaves the terminal clean after the last record.
  std::string Finish();

  // Unicode block sparkline of `values` scaled between their min and max.
  static std::string Sparkline(const std::deque<float>& values);
  // "1:02:03" or "4:05".
  static std::string FormatDuration(double seconds);

 private:
  std::string StatusBlock() const;
  std::string PlainStepLine(const fp8d::v1::StepMetrics& step) const;
  static std::string EventLine(const fp8d::v1::Event& event);
  std::string Redraw(const std::string& above);

  std::string job_;
  bool tty_;
  int drawn_lines_ = 0;           // lines of the status block currently on screen
  bool have_step_ = false;
  fp8d::v1::StepMetrics last_;
  double step_ms_ema_ = 0.0;      // smoothed step time for the ETA
  std::deque<float> losses_;      // most recent first-to-last, bounded by kSparkWidth
  std::string last_eval_;
};

}  // namespace fp8d::client
