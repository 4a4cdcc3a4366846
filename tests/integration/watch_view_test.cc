// fp8ctl's live view, fed records directly: what a terminal user sees.
#include "client/watch_view.h"

#include "absl/strings/match.h"
#include "gtest/gtest.h"

namespace fp8d::client {
namespace {
namespace v1 = fp8d::v1;

v1::MetricRecord Step(int64_t step, float loss) {
  v1::MetricRecord r;
  auto* s = r.mutable_step();
  s->set_step(step);
  s->set_total_steps(100);
  s->set_loss(loss);
  s->set_lr(3e-4f);
  s->set_tokens_per_sec(12345);
  s->set_step_time_ms(500);
  s->set_recipe_version(2);
  s->set_recipe_name("delayed");
  s->set_fp8_layers(8);
  s->set_total_layers(9);
  return r;
}

TEST(Fp8ctlWatchView, TerminalViewRedrawsProgressEtaLossSparklineAndRecipeInPlace) {
  WatchView view("jobs/demo-1", /*tty=*/true);
  std::string first = view.OnRecord(Step(10, 5.0f));
  EXPECT_FALSE(absl::StrContains(first, "\033[3A")) << "nothing to move over yet";
  std::string second = view.OnRecord(Step(50, 3.0f));
  EXPECT_TRUE(absl::StrContains(second, "\033[3A")) << "moves up over the 3-line block";
  EXPECT_TRUE(absl::StrContains(second, "jobs/demo-1")) << second;
  EXPECT_TRUE(absl::StrContains(second, " 50%  step 50/100")) << second;
  // ETA: 50 steps left at the smoothed step time (0.5 s) = 25 s.
  EXPECT_TRUE(absl::StrContains(second, "ETA 0:25")) << second;
  EXPECT_TRUE(absl::StrContains(second, "loss 3.0000")) << second;
  EXPECT_TRUE(absl::StrContains(second, "12.3k tok/s")) << second;
  EXPECT_TRUE(absl::StrContains(second, "recipe delayed v2  FP8 8/9 layers")) << second;
  EXPECT_TRUE(absl::StrContains(second, "loss █▁")) << "sparkline: high then low: " << second;
}

TEST(Fp8ctlWatchView, EventsPrintAboveTheStatusBlock) {
  WatchView view("jobs/demo-1", /*tty=*/true);
  view.OnRecord(Step(10, 5.0f));
  v1::MetricRecord r;
  auto* e = r.mutable_event();
  e->set_step(11);
  e->set_kind("recipe_changed");
  e->set_recipe_version(3);
  e->mutable_recipe()->set_name("current");
  e->set_amax_handling(v1::AMAX_RESET);
  std::string out = view.OnRecord(r);
  const size_t event_at = out.find("[step 11] recipe_changed: current v3 (amax reset)");
  ASSERT_NE(event_at, std::string::npos) << out;
  EXPECT_LT(event_at, out.find("step 10/100")) << "the event scrolls above the redrawn block";
}

TEST(Fp8ctlWatchView, PipeGetsOnePlainLinePerRecord) {
  WatchView view("jobs/demo-1", /*tty=*/false);
  EXPECT_EQ(view.OnRecord(Step(99, 2.5f)),
            "step 99/100 loss 2.5000 lr 3.000e-04 tok/s 12.3k recipe delayed v2 fp8 8/9 eta 0:01\n");
  v1::MetricRecord eval;
  eval.mutable_eval()->set_step(100);
  eval.mutable_eval()->set_loss(2.25f);
  eval.mutable_eval()->set_bits_per_byte(3.25f);
  EXPECT_EQ(view.OnRecord(eval), "[step 100] eval loss 2.2500 bits/byte 3.2500\n");
}

TEST(Fp8ctlWatchView, SparklineAndDurationFormatting) {
  EXPECT_EQ(WatchView::Sparkline({1, 2, 3}), "▁▅█");
  EXPECT_EQ(WatchView::Sparkline({2, 2}), "▄▄");
  EXPECT_EQ(WatchView::FormatDuration(65), "1:05");
  EXPECT_EQ(WatchView::FormatDuration(3725), "1:02:05");
  EXPECT_EQ(WatchView::FormatDuration(-1), "--:--");
}

}  // namespace
}  // namespace fp8d::client
