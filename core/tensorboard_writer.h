// TensorBoard event files for a run directory, so `tensorboard --logdir STATE_DIR/jobs` (or
// --logdir runs/) shows every run that fp8d or fp8d-train trained. One file per process that
// trains the run: DIR/events.out.tfevents.<unix seconds>.<host>.<pid>, TFRecord-framed
// (core/tfrecord.h) tensorboard.Event messages, flushed to the kernel after every record so a
// running TensorBoard sees each step.
//
// Tags written:
//   train/loss, train/learning_rate, train/grad_norm, train/tokens_per_sec, train/model_tflops,
//   train/mfu, train/step_time_ms, train/memory_bytes, train/skipped_steps, train/tokens_seen,
//   recipe/version, recipe/fp8_layers                               every logged step
//   eval/loss, eval/bits_per_byte                                   every eval
//   events                                                          text, one entry per event
//   fp8_amax/<layer>/<role>, fp8_scale/<layer>/<role>,
//   fp8_saturated/<layer>/<role>, fp8_underflow/<layer>/<role>      FP8 tensor statistics
// The FP8 tensor scalars are written at no more than kTensorBoardAmaxPoints steps of a run
// (every ceil(steps / kTensorBoardAmaxPoints)-th step and the last), which bounds the file of a
// long run with hundreds of FP8 tensors. A run resumed from the checkpoint of step N writes a
// SessionLog START at step N + 1, which makes TensorBoard drop what an earlier process logged
// after that checkpoint instead of showing those steps twice.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "core/trainer.h"
#include "fp8d/v1/telemetry.pb.h"

namespace fp8d {

inline constexpr char kTensorBoardFilePrefix[] = "events.out.tfevents.";
inline constexpr int64_t kTensorBoardAmaxPoints = 1000;

// "layers.0.attn.qkv" and INPUT -> "fp8_amax/layers.0.attn.qkv/input" (`kind` = "fp8_amax").
std::string Fp8TensorTag(const std::string& kind, const fp8d::v1::TensorAmax& tensor);

class TensorBoardWriter : public MetricSink {
 public:
  // Creates DIR (when missing) and a new event file in it. `total_steps` spaces out the FP8
  // tensor scalars (0: every step).
  static absl::StatusOr<std::unique_ptr<TensorBoardWriter>> Open(const std::string& dir,
                                                                 int64_t total_steps);
  ~TensorBoardWriter() override;
  TensorBoardWriter(const TensorBoardWriter&) = delete;
  TensorBoardWriter& operator=(const TensorBoardWriter&) = delete;

  // MetricSink. A write error is logged once and remembered (status()): training goes on.
  void OnMetric(const fp8d::v1::MetricRecord& record) override;
  void OnAmax(const fp8d::v1::AmaxRecord& record) override;
  absl::Status status() const;

  // Whether the FP8 tensor scalars of `step` are written.
  bool WritesAmaxAt(int64_t step) const;
  const std::string& path() const { return path_; }

  // One Event of scalar summaries (simple_value).
  absl::Status WriteScalars(int64_t step, double wall_time,
                            const std::vector<std::pair<std::string, float>>& values);
  // One Event with a text summary (rendered as Markdown by TensorBoard's text plugin).
  absl::Status WriteText(int64_t step, double wall_time, const std::string& tag,
                         const std::string& text);
  // SessionLog START at `step`: TensorBoard discards what it read for steps >= `step` before.
  absl::Status WriteSessionStart(int64_t step, double wall_time);

 private:
  TensorBoardWriter(std::string path, int fd, int64_t amax_every, int64_t total_steps);
  absl::Status Append(const std::string& event);
  void Remember(const absl::Status& s);

  const std::string path_;
  const int64_t amax_every_;
  const int64_t total_steps_;
  mutable absl::Mutex mu_;
  int fd_ ABSL_GUARDED_BY(mu_);
  absl::Status status_ ABSL_GUARDED_BY(mu_);
};

}  // namespace fp8d
