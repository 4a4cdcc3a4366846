#include "client/fp8ctl_commands.h"

#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <functional>
#include <iostream>
#include <map>
#include <sstream>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "client/amax_table.h"
#include "client/fp8d_client.h"
#include "client/job_comparison.h"
#include "client/watch_view.h"
#include "google/protobuf/util/json_util.h"

namespace fp8d::client {
namespace v1 = fp8d::v1;
namespace {

struct Context {
  const Fp8ctlArgs& a;
  std::ostream& out;
  std::ostream& err;
  TrainerClient& client;
};

std::string Json(const google::protobuf::Message& m) {
  std::string s;
  google::protobuf::util::JsonPrintOptions options;
  options.preserve_proto_field_names = true;
  (void)google::protobuf::util::MessageToJsonString(m, &s, options);
  return s;
}

// A list as one JSON array (streams print one object per line instead).
template <typename Messages>
std::string JsonArray(const Messages& list) {
  std::vector<std::string> items;
  for (const auto& m : list) items.push_back(Json(m));
  return absl::StrCat("[", absl::StrJoin(items, ","), "]\n");
}

int Fail(const Context& c, const absl::Status& status) {
  c.err << "fp8ctl: " << absl::StatusCodeToString(status.code()) << ": " << status.message()
        << "\n";
  if (absl::IsUnavailable(status)) {
    c.err << "fp8ctl: is fp8d running at " << c.a.addr
          << "? (start it, or point --addr or $FP8D_ADDR at it)\n";
  }
  return kExitError;
}

int Usage(const Context& c, const std::string& message) {
  c.err << "fp8ctl: " << message << "\nRun `fp8ctl " << c.a.command
        << " --help` for its arguments and options.\n";
  return kExitUsage;
}

std::string StateName(v1::JobState state) { return v1::JobState_Name(state); }

// Local time, to the second; "-" for unset.
std::string FormatTime(int64_t unix_micros) {
  if (unix_micros <= 0) return "-";
  return absl::FormatTime("%Y-%m-%d %H:%M:%S", absl::FromUnixMicros(unix_micros),
                          absl::LocalTimeZone());
}

// From the start to the end, or to now while the job runs; "-" before it started.
std::string Elapsed(const v1::Job& job) {
  if (job.start_unix_micros() <= 0) return "-";
  const int64_t end =
      job.end_unix_micros() > 0 ? job.end_unix_micros() : absl::ToUnixMicros(absl::Now());
  return WatchView::FormatDuration((end - job.start_unix_micros()) / 1e6);
}

// The first step a stream sends: --from-step, with `now` resolved against the job.
absl::StatusOr<int64_t> FromStep(const Context& c, const std::string& job) {
  int64_t current = 0;
  if (c.a.from_step == "now") {
    auto j = c.client.GetJob(job);
    if (!j.ok()) return j.status();
    current = j->step();
  }
  std::string error;
  auto step = ParseFromStep(c.a.from_step, current, &error);
  if (!step) return absl::InvalidArgumentError(absl::StrCat("--from-step: ", error));
  return *step;
}

void PrintJob(const Context& c, const v1::Job& job) {
  if (c.a.json) {
    c.out << Json(job) << "\n";
    return;
  }
  c.out << job.name() << "  " << StateName(job.state());
  if (!job.reason().empty()) c.out << " (" << job.reason() << ")";
  c.out << "\n";
  c.out << absl::StrFormat("  step %d/%d  loss %.4f  engine %s\n", job.step(), job.total_steps(),
                           job.last_loss(), job.engine().empty() ? "-" : job.engine());
  c.out << absl::StrFormat("  recipe %s v%d  FP8 %d/%d layers\n", job.recipe().name(),
                           job.recipe_version(), job.fp8_layers(), job.total_layers());
  c.out << absl::StrFormat("  model %s  data %s\n", job.spec().model().preset(),
                           job.spec().data().train());
  c.out << "  submitted " << FormatTime(job.create_unix_micros()) << "  started "
        << FormatTime(job.start_unix_micros());
  if (job.end_unix_micros() > 0) c.out << "  ended " << FormatTime(job.end_unix_micros());
  c.out << "  elapsed " << Elapsed(job) << "\n";
  if (!job.continued_from().empty()) c.out << "  continued from " << job.continued_from() << "\n";
  if (!job.latest_checkpoint().empty()) c.out << "  checkpoint " << job.latest_checkpoint() << "\n";
}

// Follows the job's metrics until it ends or Ctrl-C; then reports the final state.
int Watch(const Context& c, const std::string& job, int64_t from_step) {
  v1::StreamMetricsRequest request;
  request.set_name(job);
  request.set_from_step(from_step);
  request.set_follow(true);
  WatchView view(QualifyJobName(job), !c.a.json && isatty(STDOUT_FILENO));
  absl::Status s = c.client.StreamMetrics(request, [&](const v1::MetricRecord& r) {
    c.out << (c.a.json ? Json(r) + "\n" : view.OnRecord(r));
    c.out.flush();
    return true;
  });
  if (!s.ok()) return Fail(c, s);
  c.out << view.Finish();
  auto final_job = c.client.GetJob(job);
  if (!final_job.ok()) return Fail(c, final_job.status());
  if (!c.a.json) {
    c.out << final_job->name() << " " << StateName(final_job->state())
          << (final_job->reason().empty() ? "" : absl::StrCat(" (", final_job->reason(), ")"))
          << "\n";
  }
  return final_job->state() == v1::FAILED ? kExitError : kExitOk;
}

int CmdInfo(const Context& c) {
  auto info = c.client.GetServerInfo();
  if (!info.ok()) return Fail(c, info.status());
  if (c.a.json) {
    c.out << Json(*info) << "\n";
    return kExitOk;
  }
  c.out << "fp8d " << info->version() << "\n";
  c.out << "engine      " << info->engine() << "\n";
  c.out << "device      " << info->device_name()
        << (info->compute_capability().empty()
                ? ""
                : absl::StrCat(" (sm ", info->compute_capability(), ")"))
        << "\n";
  c.out << absl::StrFormat("memory      %.1f GiB\n", info->device_memory_bytes() / 1073741824.0);
  c.out << "recipes     " << absl::StrJoin(info->supported_recipes(), ", ") << "\n";
  for (const auto& r : info->unsupported_recipes()) c.out << "unsupported " << r << "\n";
  c.out << "running     " << (info->running_job().empty() ? "-" : info->running_job()) << "\n";
  c.out << "queued      " << info->queued_jobs() << "\n";
  return kExitOk;
}

int Submitted(const Context& c, const v1::Job& job) {
  if (c.a.json) {
    c.out << Json(job) << "\n";
  } else {
    c.out << "submitted " << job.name() << " (" << StateName(job.state()) << ")";
    if (!job.continued_from().empty()) c.out << ", continuing from " << job.continued_from();
    c.out << "\n";
  }
  if (c.a.watch) return Watch(c, job.name(), 0);
  return kExitOk;
}

int CmdSubmit(const Context& c) {
  std::ifstream in(c.a.job_file, std::ios::binary);
  if (!in) {
    return Fail(c, absl::NotFoundError(absl::StrCat("job file `", c.a.job_file,
                                                    "` cannot be read")));
  }
  std::stringstream text;
  text << in.rdbuf();
  auto job = c.client.SubmitJobText(text.str(), c.a.sets, c.a.request_id,
                                    c.a.job_file.substr(c.a.job_file.find_last_of('/') + 1));
  if (!job.ok()) return Fail(c, job.status());
  return Submitted(c, *job);
}

int CmdJobs(const Context& c) {
  auto jobs = c.client.ListAllJobs();
  if (!jobs.ok()) return Fail(c, jobs.status());
  if (c.a.json) {
    c.out << JsonArray(*jobs);
    return kExitOk;
  }
  if (c.a.quiet) {
    for (const auto& j : *jobs) c.out << j.name().substr(5) << "\n";
    return kExitOk;
  }
  c.out << absl::StrFormat("%-28s %-10s %13s %9s %-14s %-19s %8s  %s\n", "JOB", "STATE", "STEP",
                           "LOSS", "RECIPE", "STARTED", "ELAPSED", "REASON");
  for (const auto& j : *jobs) {
    c.out << absl::StrFormat("%-28s %-10s %6d/%-6d %9.4f %-14s %-19s %8s  %s\n", j.name(),
                             StateName(j.state()), j.step(), j.total_steps(), j.last_loss(),
                             absl::StrCat(j.recipe().name(), " v", j.recipe_version()),
                             FormatTime(j.start_unix_micros()), Elapsed(j), j.reason());
  }
  return kExitOk;
}

int CmdShow(const Context& c) {
  auto job = c.client.GetJob(c.a.job);
  if (!job.ok()) return Fail(c, job.status());
  PrintJob(c, *job);
  return kExitOk;
}

int CmdWatch(const Context& c) {
  auto from = FromStep(c, c.a.job);
  if (!from.ok()) return Fail(c, from.status());
  return Watch(c, c.a.job, *from);
}

// Events that mean something went wrong, and how loudly.
std::string EventLevel(const std::string& kind) {
  if (kind == "failed") return "ERROR";
  if (kind == "step_skipped" || kind == "cancelled" || kind == "stopped") return "WARN";
  return "INFO";
}

std::string EventText(const v1::Event& e) {
  std::string text = e.kind();
  if (e.kind() == "recipe_changed") {
    absl::StrAppend(&text, ": ", e.recipe().name(), " v", e.recipe_version(),
                    e.amax_handling() == v1::AMAX_RESET ? " (amax reset)" : " (amax kept)");
  } else if (!e.message().empty()) {
    absl::StrAppend(&text, ": ", e.message());
  } else if (!e.checkpoint().empty()) {
    absl::StrAppend(&text, ": ", e.checkpoint());
  }
  return text;
}

int CmdLogs(const Context& c) {
  auto from = FromStep(c, c.a.job);
  if (!from.ok()) return Fail(c, from.status());
  v1::StreamMetricsRequest request;
  request.set_name(c.a.job);
  request.set_from_step(*from);
  request.set_follow(c.a.follow);
  bool failure_shown = false;
  absl::Status s = c.client.StreamMetrics(request, [&](const v1::MetricRecord& r) {
    if (!r.has_event()) return true;
    const v1::Event& e = r.event();
    failure_shown = failure_shown || e.kind() == "failed";
    if (c.a.json) {
      c.out << Json(r) << "\n";
    } else {
      c.out << absl::StrFormat("%s  step %-7d %-5s  %s\n", FormatTime(r.unix_micros()), e.step(),
                               EventLevel(e.kind()), EventText(e));
    }
    c.out.flush();
    return true;
  });
  if (!s.ok()) return Fail(c, s);
  // A job that failed before it ran (bad data, an engine that did not start) has only a reason.
  auto job = c.client.GetJob(c.a.job);
  if (!job.ok()) return Fail(c, job.status());
  if (!c.a.json && job->state() == v1::FAILED && !failure_shown) {
    c.out << absl::StrFormat("%s  step %-7d %-5s  %s\n", FormatTime(job->end_unix_micros()),
                             job->step(), "ERROR", absl::StrCat("failed: ", job->reason()));
  }
  return kExitOk;
}

int CmdCompare(const Context& c) {
  if (c.a.jobs.size() < 2) return Usage(c, "compare needs two or more jobs");
  std::vector<RunSummary> runs;
  for (const std::string& name : c.a.jobs) {
    auto job = c.client.GetJob(name);
    if (!job.ok()) return Fail(c, job.status());
    std::vector<v1::MetricRecord> records;
    v1::StreamMetricsRequest request;
    request.set_name(name);
    absl::Status s = c.client.StreamMetrics(request, [&](const v1::MetricRecord& r) {
      if (r.has_step() || r.has_eval()) records.push_back(r);
      return true;
    });
    if (!s.ok()) return Fail(c, s);
    runs.push_back(SummarizeRun(*job, records));
  }
  c.out << (c.a.json ? CompareJson(runs)
                     : CompareTable(runs, absl::ToUnixMicros(absl::Now())));
  return kExitOk;
}

int CmdRecipeGet(const Context& c) {
  auto state = c.client.GetRecipe(c.a.job);
  if (!state.ok()) return Fail(c, state.status());
  if (c.a.json) {
    c.out << Json(*state) << "\n";
  } else {
    c.out << absl::StrFormat("recipe %s v%d since step %d, FP8 %d/%d layers\n",
                             state->recipe().name(), state->recipe_version(), state->since_step(),
                             state->fp8_layers(), state->total_layers());
    c.out << Json(state->recipe()) << "\n";
  }
  return kExitOk;
}

int CmdRecipeSet(const Context& c) {
  // Start from the active recipe so the job's layer policy carries over to the new recipe.
  auto current = c.client.GetRecipe(c.a.job);
  if (!current.ok()) return Fail(c, current.status());
  v1::UpdateRecipeRequest request;
  request.set_name(c.a.job);
  v1::Recipe* recipe = request.mutable_recipe();
  *recipe->mutable_policy() = current->recipe().policy();
  recipe->set_name(c.a.recipe);
  recipe->set_format(c.a.format);
  recipe->set_amax_compute_algo(c.a.algo);
  if (c.a.history_len) recipe->set_amax_history_len(*c.a.history_len);
  if (c.a.margin) recipe->set_margin(*c.a.margin);
  request.set_amax_handling(c.a.amax == "reset" ? v1::AMAX_RESET : v1::AMAX_KEEP);
  request.set_checkpoint_first(c.a.checkpoint_first);
  auto response = c.client.UpdateRecipe(request);
  if (!response.ok()) return Fail(c, response.status());
  if (c.a.json) {
    c.out << Json(*response) << "\n";
  } else {
    c.out << absl::StrFormat("recipe %s is version %d, effective before step %d, amax %s\n",
                             c.a.recipe, response->recipe_version(), response->effective_step(),
                             response->amax_handling() == v1::AMAX_RESET ? "reset" : "kept");
    if (!response->checkpoint().empty()) c.out << "checkpoint " << response->checkpoint() << "\n";
  }
  return kExitOk;
}

int CmdAmax(const Context& c) {
  auto from = FromStep(c, c.a.job);
  if (!from.ok()) return Fail(c, from.status());
  v1::StreamAmaxRequest request;
  request.set_name(c.a.job);
  request.set_layer_regex(c.a.layer);
  request.set_from_step(*from);
  request.set_follow(c.a.follow);
  const bool table = !c.a.csv && !c.a.json;
  if (c.a.csv) {
    c.out << "step,recipe_version,layer,role,format,amax,scale,frac_saturated,frac_underflow\n";
  }
  AmaxTable live(isatty(STDOUT_FILENO));
  v1::AmaxRecord last;
  bool any = false;
  absl::Status s = c.client.StreamAmax(request, [&](const v1::AmaxRecord& r) {
    any = true;
    if (c.a.json) {
      c.out << Json(r) << "\n";
    } else if (c.a.csv) {
      for (const auto& t : r.tensors()) {
        c.out << absl::StrFormat("%d,%d,%s,%s,%s,%g,%g,%g,%g\n", r.step(), r.recipe_version(),
                                 t.layer(), v1::TensorRole_Name(t.role()), t.format(), t.amax(),
                                 t.scale(), t.frac_saturated(), t.frac_underflow());
      }
    } else if (c.a.follow) {
      c.out << live.OnRecord(r);
    } else {
      last = r;  // without --follow the table shows the newest record
    }
    c.out.flush();
    return true;
  });
  if (!s.ok()) return Fail(c, s);
  if (table && !any) {
    c.out << "no amax records (the recipe is bf16 or no step has run"
          << (*from > 0 ? absl::StrCat(" since step ", *from) : "") << ")\n";
  } else if (table && !c.a.follow) {
    c.out << AmaxTable::Render(last);
  }
  return kExitOk;
}

int CmdCheckpointSave(const Context& c) {
  auto ck = c.client.SaveCheckpoint(c.a.job);
  if (!ck.ok()) return Fail(c, ck.status());
  if (c.a.json) {
    c.out << Json(*ck) << "\n";
  } else {
    c.out << "saved " << ck->name() << " at step " << ck->step() << " (" << ck->size_bytes()
          << " bytes, sha256 " << ck->sha256() << ")\n";
  }
  return kExitOk;
}

int CmdCheckpointList(const Context& c) {
  auto list = c.client.ListCheckpoints(c.a.job);
  if (!list.ok()) return Fail(c, list.status());
  if (c.a.json) {
    c.out << JsonArray(*list);
    return kExitOk;
  }
  for (const auto& ck : *list) {
    c.out << absl::StrFormat("%-48s step %6d  %10d bytes  recipe v%d  %s\n", ck.name(), ck.step(),
                             ck.size_bytes(), ck.recipe_version(), ck.sha256());
  }
  return kExitOk;
}

// `CHECKPOINT` as a resource name: an id within JOB, or a full name.
std::string CheckpointName(const std::string& job, const std::string& checkpoint) {
  if (checkpoint.empty()) return QualifyJobName(job);
  if (checkpoint.find('/') != std::string::npos) return checkpoint;
  return absl::StrCat(QualifyJobName(job), "/checkpoints/", checkpoint);
}

int CmdCheckpointPull(const Context& c) {
  const std::string& out_path = c.a.out;
  std::error_code ec;
  if (std::filesystem::exists(out_path, ec) && !c.a.force) {
    return Fail(c, absl::AlreadyExistsError(absl::StrCat(
                       "`", out_path, "` exists; pass --force to overwrite it")));
  }
  const bool tty = !c.a.json && isatty(STDERR_FILENO);
  auto result = c.client.PullCheckpoint(
      CheckpointName(c.a.job, c.a.checkpoint), out_path, [&](int64_t done, int64_t total) {
        if (tty) {
          c.err << absl::StrFormat("\rpulling %.1f/%.1f MiB", done / 1048576.0,
                                   total / 1048576.0);
        }
      });
  if (tty) c.err << "\n";
  if (!result.ok()) return Fail(c, result.status());
  if (c.a.json) {
    c.out << absl::StrFormat(
        "{\"checkpoint\":\"%s\",\"path\":\"%s\",\"size_bytes\":%d,\"sha256\":\"%s\","
        "\"resumed_from\":%d}\n",
        result->checkpoint, result->path, result->size_bytes, result->sha256,
        result->resumed_from);
  } else {
    c.out << "pulled " << result->checkpoint << " to " << result->path << " ("
          << result->size_bytes << " bytes, sha256 " << result->sha256 << " verified"
          << (result->resumed_from > 0 ? absl::StrCat(", resumed at byte ", result->resumed_from)
                                       : "")
          << ")\n";
  }
  return kExitOk;
}

int CmdJobAction(const Context& c) {
  const std::string& verb = c.a.command;
  absl::StatusOr<v1::Job> result = verb == "pause"    ? c.client.PauseJob(c.a.job)
                                   : verb == "resume" ? c.client.ResumeJob(c.a.job)
                                                      : c.client.CancelJob(c.a.job);
  if (!result.ok()) return Fail(c, result.status());
  PrintJob(c, *result);
  return kExitOk;
}

int CmdDelete(const Context& c) {
  auto deleted = c.client.DeleteJob(c.a.job);
  if (!deleted.ok()) return Fail(c, deleted.status());
  if (c.a.json) {
    c.out << Json(*deleted) << "\n";
  } else {
    c.out << absl::StrFormat("deleted %s (%.1f MiB of logs and checkpoints freed)\n",
                             deleted->name(), deleted->freed_bytes() / 1048576.0);
  }
  return kExitOk;
}

int CmdContinue(const Context& c) {
  auto job = c.client.GetJob(c.a.job);
  if (!job.ok()) return Fail(c, job.status());
  v1::SubmitJobRequest request;
  *request.mutable_spec() = job->spec();
  if (c.a.steps) {
    request.mutable_spec()->set_steps(*c.a.steps);
  } else if (c.a.checkpoint.empty() && job->state() == v1::SUCCEEDED) {
    return Usage(c, absl::StrCat(job->name(), " ran all its ", job->spec().steps(),
                                 " steps: give --steps with a larger total"));
  }
  for (const auto& s : c.a.sets) request.add_set(s);
  request.set_continue_from(CheckpointName(c.a.job, c.a.checkpoint));
  auto submitted = c.client.SubmitJob(request);
  if (!submitted.ok()) return Fail(c, submitted.status());
  return Submitted(c, *submitted);
}

}  // namespace

std::string InterruptMessage(const Fp8ctlArgs& a) {
  if (a.command == "checkpoint pull") {
    return absl::StrCat("pull interrupted: what arrived is kept in ", a.out,
                        ".partial; run the same command again to resume");
  }
  if (a.command == "watch" || a.command == "submit" || a.command == "continue") {
    return "detached (the job keeps running)";
  }
  if (a.command == "logs" || a.command == "amax") return "stopped (the job keeps running)";
  return "interrupted";
}

int RunCommand(const Fp8ctlArgs& a, std::ostream& out, std::ostream& err) {
  ClientOptions options;
  options.address = a.addr;
  options.tls = a.tls;
  options.tls_ca_file = a.tls_ca;
  if (!a.token_file.empty()) {
    auto token = ReadTokenFile(a.token_file);
    if (!token.ok()) {
      err << "fp8ctl: " << absl::StatusCodeToString(token.status().code()) << ": "
          << token.status().message() << "\n";
      return kExitError;
    }
    options.token = *token;
  }
  auto client = TrainerClient::Connect(options);
  if (!client.ok()) {
    err << "fp8ctl: " << client.status().message() << "\n";
    return kExitError;
  }
  Context c{a, out, err, **client};
  static const auto* kCommands = new std::map<std::string, std::function<int(const Context&)>>{
      {"info", CmdInfo},
      {"submit", CmdSubmit},
      {"jobs", CmdJobs},
      {"show", CmdShow},
      {"watch", CmdWatch},
      {"logs", CmdLogs},
      {"compare", CmdCompare},
      {"recipe get", CmdRecipeGet},
      {"recipe set", CmdRecipeSet},
      {"amax", CmdAmax},
      {"checkpoint save", CmdCheckpointSave},
      {"checkpoint list", CmdCheckpointList},
      {"checkpoint pull", CmdCheckpointPull},
      {"pause", CmdJobAction},
      {"resume", CmdJobAction},
      {"cancel", CmdJobAction},
      {"delete", CmdDelete},
      {"continue", CmdContinue},
  };
  auto it = kCommands->find(a.command);
  if (it == kCommands->end()) {
    err << "fp8ctl: no command `" << a.command << "`. Run `fp8ctl --help` for the commands.\n";
    return kExitUsage;
  }
  return it->second(c);
}

}  // namespace fp8d::client
