// fp8d-train: runs one job file locally, without the daemon, with live progress on the terminal.
//
//   fp8d-train JOBFILE [--set key=value]... [--engine auto|cpu|cuda] [--out DIR]
//              [--resume CHECKPOINT] [--data-root DIR]
//
// Writes checkpoints to DIR/checkpoints and the metric and amax logs and a TensorBoard event
// file to DIR (default runs/<job name>). Ctrl-C stops at the next step boundary after writing a
// checkpoint that --resume continues from.
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <csignal>
#include <cstdio>
#include <filesystem>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "core/job_spec.h"
#include "core/metric_log.h"
#include "core/model_config.h"
#include "core/recipe_config.h"
#include "core/tensorboard_writer.h"
#include "core/trainer.h"
#include "server/engine_factory.h"

namespace fp8d {
namespace {

constexpr char kUsage[] =
    "usage: fp8d-train JOBFILE [--set key=value]... [--engine auto|cpu|cuda] [--out DIR]\n"
    "                  [--resume CHECKPOINT] [--data-root DIR]\n";
constexpr int kBarWidth = 24;
constexpr int kPlainProgressLines = 20;  // without a terminal: about this many step lines

std::atomic<bool> g_stop_signal{false};
extern "C" void OnStopSignal(int) { g_stop_signal.store(true); }

struct Args {
  std::string job_file;
  std::vector<std::string> sets;
  std::string engine = "auto";
  std::string out;
  std::string resume;
  std::string data_root;
};

absl::StatusOr<Args> ParseArgs(int argc, char** argv) {
  Args args;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    auto value = [&](const std::string& flag) -> absl::StatusOr<std::string> {
      if (absl::StartsWith(a, flag + "=")) return a.substr(flag.size() + 1);
      if (i + 1 >= argc) return absl::InvalidArgumentError(absl::StrCat(flag, " needs a value"));
      return std::string(argv[++i]);
    };
    absl::StatusOr<std::string> v;
    if (a == "-h" || a == "--help") {
      return absl::CancelledError("help");
    } else if (a == "--set" || absl::StartsWith(a, "--set=")) {
      if (!(v = value("--set")).ok()) return v.status();
      args.sets.push_back(*v);
    } else if (a == "--engine" || absl::StartsWith(a, "--engine=")) {
      if (!(v = value("--engine")).ok()) return v.status();
      args.engine = *v;
    } else if (a == "--out" || absl::StartsWith(a, "--out=")) {
      if (!(v = value("--out")).ok()) return v.status();
      args.out = *v;
    } else if (a == "--resume" || absl::StartsWith(a, "--resume=")) {
      if (!(v = value("--resume")).ok()) return v.status();
      args.resume = *v;
    } else if (a == "--data-root" || absl::StartsWith(a, "--data-root=")) {
      if (!(v = value("--data-root")).ok()) return v.status();
      args.data_root = *v;
    } else if (absl::StartsWith(a, "-")) {
      return absl::InvalidArgumentError(absl::StrCat("unknown option ", a));
    } else if (args.job_file.empty()) {
      args.job_file = a;
    } else {
      return absl::InvalidArgumentError(absl::StrCat("more than one job file: ", args.job_file,
                                                     " and ", a));
    }
  }
  if (args.job_file.empty()) return absl::InvalidArgumentError("no job file given");
  return args;
}

std::string Duration(double seconds) {
  const int64_t s = static_cast<int64_t>(seconds + 0.5);
  if (s >= 3600) return absl::StrFormat("%d:%02d:%02d", s / 3600, (s / 60) % 60, s % 60);
  return absl::StrFormat("%d:%02d", s / 60, s % 60);
}

std::string Rate(double tokens_per_sec) {
  if (tokens_per_sec >= 1e6) return absl::StrFormat("%.2fM", tokens_per_sec / 1e6);
  if (tokens_per_sec >= 1e3) return absl::StrFormat("%.1fk", tokens_per_sec / 1e3);
  return absl::StrFormat("%.0f", tokens_per_sec);
}

// Prints progress and persists every record to the job's metric and amax logs and its
// TensorBoard event file.
class ProgressPrinter : public MetricSink {
 public:
  ProgressPrinter(MetricLog* log, TensorBoardWriter* tensorboard, int64_t total_steps)
      : log_(log),
        tensorboard_(tensorboard),
        total_(total_steps),
        tty_(isatty(STDOUT_FILENO) == 1),
        plain_every_(std::max<int64_t>(1, total_steps / kPlainProgressLines)),
        start_(std::chrono::steady_clock::now()) {}

  void OnMetric(const fp8d::v1::MetricRecord& record) override {
    log_->OnMetric(record);
    tensorboard_->OnMetric(record);
    if (record.has_step()) {
      PrintStep(record.step());
    } else if (record.has_eval()) {
      const auto& e = record.eval();
      std::string line = absl::StrFormat("eval  step %d: loss %.4f", e.step(), e.loss());
      if (e.bits_per_byte() > 0) absl::StrAppendFormat(&line, " (%.3f bits/byte)", e.bits_per_byte());
      PrintLine(line);
    } else if (record.has_event()) {
      const auto& e = record.event();
      // The final checkpoint is printed once the run returns.
      if (e.kind() == "finished" || (e.kind() == "checkpoint_saved" && e.step() == total_)) return;
      PrintLine(absl::StrCat("[", e.kind(), "] ", e.message()));
    }
  }

  void OnAmax(const fp8d::v1::AmaxRecord& record) override {
    log_->OnAmax(record);
    tensorboard_->OnAmax(record);
  }

  // Called just before Run(): the ETA extrapolates from the steps this process has run.
  void Start(int64_t first_step) {
    first_step_ = first_step;
    start_ = std::chrono::steady_clock::now();
  }

  void Finish() {
    if (tty_ && open_line_) std::printf("\n");
    open_line_ = false;
    std::fflush(stdout);
  }

 private:
  void PrintStep(const fp8d::v1::StepMetrics& m) {
    const double elapsed =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - start_).count();
    const int64_t done_here = m.step() - first_step_;
    const double eta = done_here > 0 ? elapsed / done_here * (total_ - m.step()) : 0;
    const double fraction = static_cast<double>(m.step()) / total_;
    const int filled = static_cast<int>(fraction * kBarWidth);
    const std::string bar = std::string(filled, '#') + std::string(kBarWidth - filled, '.');
    const std::string line = absl::StrFormat(
        "step %*d/%d [%s] %3d%% ETA %s  loss %.4f  lr %.2e  %s tok/s  %s v%d  FP8 %d/%d layers",
        static_cast<int>(absl::StrCat(total_).size()), m.step(), total_, bar,
        static_cast<int>(fraction * 100), Duration(eta), m.loss(), m.lr(),
        Rate(m.tokens_per_sec()), m.recipe_name(), m.recipe_version(), m.fp8_layers(),
        m.total_layers());
    if (tty_) {
      std::printf("\r%s\033[K", line.c_str());
      open_line_ = true;
      std::fflush(stdout);
    } else if (m.step() % plain_every_ == 0 || m.step() == total_ || m.step() == 1) {
      std::printf("%s\n", line.c_str());
      std::fflush(stdout);
    }
  }

  void PrintLine(const std::string& line) {
    if (tty_ && open_line_) std::printf("\r\033[K");
    std::printf("%s\n", line.c_str());
    open_line_ = false;
    std::fflush(stdout);
  }

  MetricLog* const log_;
  TensorBoardWriter* const tensorboard_;
  const int64_t total_;
  const bool tty_;
  const int64_t plain_every_;
  std::chrono::steady_clock::time_point start_;
  int64_t first_step_ = 0;
  bool open_line_ = false;
};

int Fail(const absl::Status& status) {
  std::fprintf(stderr, "fp8d-train: %s\n", std::string(status.message()).c_str());
  return 1;
}

int Main(int argc, char** argv) {
  absl::StatusOr<Args> args = ParseArgs(argc, argv);
  if (!args.ok()) {
    if (absl::IsCancelled(args.status())) {
      std::printf("%s", kUsage);
      return 0;
    }
    std::fprintf(stderr, "fp8d-train: %s\n%s", std::string(args.status().message()).c_str(),
                 kUsage);
    return 2;
  }

  absl::StatusOr<fp8d::v1::JobSpec> parsed = ParseJobFile(args->job_file);
  if (!parsed.ok()) return Fail(parsed.status());
  for (const std::string& set : args->sets) {
    absl::Status s = ApplySetOverride(&*parsed, set);
    if (!s.ok()) return Fail(s);
  }
  absl::StatusOr<fp8d::v1::JobSpec> spec = ResolveJobSpec(*parsed);
  if (!spec.ok()) return Fail(spec.status());
  absl::StatusOr<ModelConfig> model = ResolveModelConfig(spec->model());
  if (!model.ok()) return Fail(model.status());
  absl::StatusOr<RecipeConfig> recipe = ResolveRecipe(spec->recipe());
  if (!recipe.ok()) return Fail(recipe.status());

  std::string name = spec->name();
  if (name.empty()) name = std::filesystem::path(args->job_file).stem().string();
  const std::string out =
      args->out.empty() ? (std::filesystem::path("runs") / name).string() : args->out;

  absl::StatusOr<std::unique_ptr<Engine>> engine =
      CreateEngine(args->engine, *model, *recipe, spec->batch_size(), spec->seq_len(),
                   spec->seed());
  if (!engine.ok()) return Fail(engine.status());
  const DeviceInfo device = (*engine)->device();

  // A resumed run re-runs the steps after its checkpoint that were logged before it stopped.
  absl::StatusOr<std::unique_ptr<MetricLog>> log =
      MetricLog::Open(out, /*skip_logged_steps=*/!args->resume.empty());
  if (!log.ok()) return Fail(log.status());
  absl::StatusOr<std::unique_ptr<TensorBoardWriter>> tensorboard =
      TensorBoardWriter::Open(out, spec->steps());
  if (!tensorboard.ok()) return Fail(tensorboard.status());
  ProgressPrinter printer(log->get(), tensorboard->get(), spec->steps());

  TrainerOptions options;
  options.checkpoint_dir = (std::filesystem::path(out) / "checkpoints").string();
  options.data_root = args->data_root;
  absl::StatusOr<std::unique_ptr<Trainer>> trainer =
      Trainer::Create(*spec, *std::move(engine), options, &printer);
  if (!trainer.ok()) return Fail(trainer.status());
  if (!args->resume.empty()) {
    absl::Status s = (*trainer)->ResumeFrom(args->resume);
    if (!s.ok()) return Fail(s);
  }

  const TrainerSnapshot snap = (*trainer)->Snapshot();
  std::printf("fp8d-train: %s: model %s (%.2fM parameters), %d steps of %d x %d tokens%s\n",
              name.c_str(), model->preset.empty() ? "custom" : model->preset.c_str(),
              model->ParamCount() / 1e6, spec->steps(), spec->batch_size(), spec->seq_len(),
              spec->grad_accum() > 1 ? absl::StrCat(" x ", spec->grad_accum(), " micro-batches").c_str()
                                     : "");
  std::printf("  engine %s (%s), recipe %s, %d/%d layers FP8\n", device.engine.c_str(),
              device.name.c_str(), snap.recipe.name().c_str(), snap.fp8_layers,
              snap.total_layers);
  std::printf("  data %s, output %s\n", spec->data().train().c_str(), out.c_str());
  std::fflush(stdout);

  std::signal(SIGINT, OnStopSignal);
  std::signal(SIGTERM, OnStopSignal);
  std::atomic<bool> finished{false};
  std::thread watcher([&] {
    while (!finished.load()) {
      if (g_stop_signal.load()) {
        (*trainer)->RequestStop(/*checkpoint=*/true);
        return;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
    }
  });
  printer.Start(snap.step);
  absl::StatusOr<RunOutcome> outcome = (*trainer)->Run();
  finished.store(true);
  watcher.join();
  printer.Finish();
  if (!outcome.ok()) return Fail(outcome.status());

  const std::string checkpoint = (*trainer)->Snapshot().latest_checkpoint;
  switch (*outcome) {
    case RunOutcome::kSucceeded:
      std::printf("final checkpoint: %s\n", checkpoint.c_str());
      return 0;
    case RunOutcome::kStopped:
      std::printf("stopped; resume with: fp8d-train %s --resume %s\n", args->job_file.c_str(),
                  checkpoint.c_str());
      return 130;
    case RunOutcome::kCancelled:
      std::printf("cancelled\n");
      return 1;
  }
  return 1;
}

}  // namespace
}  // namespace fp8d

int main(int argc, char** argv) { return fp8d::Main(argc, argv); }
