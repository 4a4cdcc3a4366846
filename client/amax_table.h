// The table of `fp8ctl amax`: one line per FP8 tensor of a step (layer, role, format, amax, scale,
// saturated and underflow percentages). With --follow it is live: on a terminal the table is
// redrawn in place for every new step; in a pipe each step's table is printed in turn.
#pragma once

#include <string>

#include "fp8d/v1/telemetry.pb.h"

namespace fp8d::client {

class AmaxTable {
 public:
  explicit AmaxTable(bool tty) : tty_(tty) {}

  // The table of `record` alone.
  static std::string Render(const fp8d::v1::AmaxRecord& record);
  // Text to write for a new record while following: a redraw over the previous table on a
  // terminal, the table and a blank line otherwise.
  std::string OnRecord(const fp8d::v1::AmaxRecord& record);

 private:
  bool tty_;
  int drawn_lines_ = 0;
};

}  // namespace fp8d::client
