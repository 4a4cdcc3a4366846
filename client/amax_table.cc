#include "client/amax_table.h"

#include <algorithm>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"

namespace fp8d::client {

std::string AmaxTable::Render(const fp8d::v1::AmaxRecord& r) {
  std::string out = absl::StrFormat("step %d, recipe v%d\n", r.step(), r.recipe_version());
  absl::StrAppendFormat(&out, "%-28s %-12s %-5s %12s %12s %9s %9s\n", "LAYER", "ROLE", "FMT",
                        "AMAX", "SCALE", "SAT%", "UFLOW%");
  for (const auto& t : r.tensors()) {
    absl::StrAppendFormat(&out, "%-28s %-12s %-5s %12.5g %12.5g %9.4f %9.4f\n", t.layer(),
                          fp8d::v1::TensorRole_Name(t.role()), t.format(), t.amax(), t.scale(),
                          100 * t.frac_saturated(), 100 * t.frac_underflow());
  }
  return out;
}

std::string AmaxTable::OnRecord(const fp8d::v1::AmaxRecord& record) {
  const std::string table = Render(record);
  if (!tty_) return table + "\n";
  std::string out;
  // Up to the first line of the previous table, clear to the end of the screen, draw anew.
  if (drawn_lines_ > 0) absl::StrAppend(&out, "\033[", drawn_lines_, "A");
  absl::StrAppend(&out, "\r\033[J", table);
  drawn_lines_ = static_cast<int>(std::count(table.begin(), table.end(), '\n'));
  return out;
}

}  // namespace fp8d::client
