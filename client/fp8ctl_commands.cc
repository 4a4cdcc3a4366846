#include "client/fp8ctl_commands.h"

#include <unistd.h>

#include <fstream>
#include <iostream>
#include <sstream>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "client/fp8d_client.h"
#include "client/watch_view.h"
#include "google/protobuf/util/json_util.h"

namespace fp8d::client {
namespace v1 = fp8d::v1;
namespace {

struct Context {
  const CommandLine& cl;
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

int Fail(std::ostream& err, const absl::Status& status) {
  err << "fp8ctl: " << absl::StatusCodeToString(status.code()) << ": " << status.message()
      << "\n";
  return kExitError;
}

int Usage(std::ostream& err, const std::string& message) {
  err << "fp8ctl: " << message << "\n\n" << UsageText();
  return kExitUsage;
}

std::string StateName(v1::JobState state) { return v1::JobState_Name(state); }

void PrintJob(const Context& c, const v1::Job& job) {
  if (c.cl.json) {
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
  if (!job.latest_checkpoint().empty()) c.out << "  checkpoint " << job.latest_checkpoint() << "\n";
}

// Follows the job's metrics until it ends or Ctrl-C; then reports the final state.
int Watch(const Context& c, const std::string& job, int64_t from_step) {
  v1::StreamMetricsRequest request;
  request.set_name(job);
  request.set_from_step(from_step);
  request.set_follow(true);
  WatchView view(QualifyJobName(job), !c.cl.json && isatty(STDOUT_FILENO));
  absl::Status s = c.client.StreamMetrics(request, [&](const v1::MetricRecord& r) {
    if (c.cl.json) {
      c.out << Json(r) << "\n";
    } else {
      c.out << view.OnRecord(r);
    }
    c.out.flush();
    return true;
  });
  if (!s.ok()) return Fail(c.err, s);
  c.out << view.Finish();
  auto final_job = c.client.GetJob(job);
  if (!final_job.ok()) return Fail(c.err, final_job.status());
  if (!c.cl.json) {
    c.out << final_job->name() << " " << StateName(final_job->state())
          << (final_job->reason().empty() ? "" : absl::StrCat(" (", final_job->reason(), ")"))
          << "\n";
  }
  return final_job->state() == v1::FAILED ? kExitError : kExitOk;
}

int CmdInfo(const Context& c) {
  auto info = c.client.GetServerInfo();
  if (!info.ok()) return Fail(c.err, info.status());
  if (c.cl.json) {
    c.out << Json(*info) << "\n";
    return kExitOk;
  }
  c.out << "fp8d " << info->version() << "\n";
  c.out << "engine      " << info->engine() << "\n";
  c.out << "device      " << info->device_name()
        << (info->compute_capability().empty() ? ""
                                               : absl::StrCat(" (sm ", info->compute_capability(), ")"))
        << "\n";
  c.out << absl::StrFormat("memory      %.1f GiB\n", info->device_memory_bytes() / 1073741824.0);
  c.out << "recipes     " << absl::StrJoin(info->supported_recipes(), ", ") << "\n";
  for (const auto& r : info->unsupported_recipes()) c.out << "unsupported " << r << "\n";
  c.out << "running     " << (info->running_job().empty() ? "-" : info->running_job()) << "\n";
  c.out << "queued      " << info->queued_jobs() << "\n";
  return kExitOk;
}

int CmdSubmit(const Context& c) {
  if (c.cl.positional.size() != 2) return Usage(c.err, "submit needs JOBFILE");
  const std::string& path = c.cl.positional[1];
  std::ifstream in(path, std::ios::binary);
  if (!in) return Fail(c.err, absl::NotFoundError(absl::StrCat("job file `", path, "` cannot be read")));
  std::stringstream text;
  text << in.rdbuf();
  auto job = c.client.SubmitJobText(text.str(), c.cl.GetAll("--set"), c.cl.Get("--request-id"));
  if (!job.ok()) return Fail(c.err, job.status());
  if (c.cl.json) {
    c.out << Json(*job) << "\n";
  } else {
    c.out << "submitted " << job->name() << " (" << StateName(job->state()) << ")\n";
  }
  if (c.cl.Has("--watch")) return Watch(c, job->name(), 0);
  return kExitOk;
}

int CmdJobs(const Context& c) {
  auto jobs = c.client.ListAllJobs();
  if (!jobs.ok()) return Fail(c.err, jobs.status());
  if (c.cl.json) {
    for (const auto& j : *jobs) c.out << Json(j) << "\n";
    return kExitOk;
  }
  c.out << absl::StrFormat("%-28s %-10s %13s %9s %-14s %s\n", "JOB", "STATE", "STEP", "LOSS",
                           "RECIPE", "REASON");
  for (const auto& j : *jobs) {
    c.out << absl::StrFormat("%-28s %-10s %6d/%-6d %9.4f %-14s %s\n", j.name(),
                             StateName(j.state()), j.step(), j.total_steps(), j.last_loss(),
                             absl::StrCat(j.recipe().name(), " v", j.recipe_version()), j.reason());
  }
  return kExitOk;
}

int CmdShow(const Context& c) {
  if (c.cl.positional.size() != 2) return Usage(c.err, "show needs JOB");
  auto job = c.client.GetJob(c.cl.positional[1]);
  if (!job.ok()) return Fail(c.err, job.status());
  PrintJob(c, *job);
  return kExitOk;
}

int CmdWatch(const Context& c) {
  if (c.cl.positional.size() != 2) return Usage(c.err, "watch needs JOB");
  int64_t from = 0;
  if (!absl::SimpleAtoi(c.cl.Get("--from-step", "0"), &from) || from < 0) {
    return Usage(c.err, "--from-step must be a step number >= 0");
  }
  return Watch(c, c.cl.positional[1], from);
}

int CmdRecipe(const Context& c) {
  const auto& p = c.cl.positional;
  if (p.size() >= 3 && p[1] == "get") {
    auto state = c.client.GetRecipe(p[2]);
    if (!state.ok()) return Fail(c.err, state.status());
    if (c.cl.json) {
      c.out << Json(*state) << "\n";
    } else {
      c.out << absl::StrFormat("recipe %s v%d since step %d, FP8 %d/%d layers\n",
                               state->recipe().name(), state->recipe_version(),
                               state->since_step(), state->fp8_layers(), state->total_layers());
      c.out << Json(state->recipe()) << "\n";
    }
    return kExitOk;
  }
  if (p.size() != 4 || p[1] != "set") {
    return Usage(c.err, "expected `recipe get JOB` or `recipe set JOB RECIPE [options]`");
  }
  // Start from the active recipe so the job's layer policy carries over to the new recipe.
  auto current = c.client.GetRecipe(p[2]);
  if (!current.ok()) return Fail(c.err, current.status());
  v1::UpdateRecipeRequest request;
  request.set_name(p[2]);
  v1::Recipe* recipe = request.mutable_recipe();
  *recipe->mutable_policy() = current->recipe().policy();
  recipe->set_name(p[3]);
  recipe->set_format(c.cl.Get("--format"));
  recipe->set_amax_compute_algo(c.cl.Get("--algo"));
  int value = 0;
  if (std::string v = c.cl.Get("--history-len"); !v.empty()) {
    if (!absl::SimpleAtoi(v, &value)) return Usage(c.err, "--history-len must be an integer");
    recipe->set_amax_history_len(value);
  }
  if (std::string v = c.cl.Get("--margin"); !v.empty()) {
    if (!absl::SimpleAtoi(v, &value)) return Usage(c.err, "--margin must be an integer");
    recipe->set_margin(value);
  }
  const std::string amax = c.cl.Get("--amax", "keep");
  if (amax != "keep" && amax != "reset") return Usage(c.err, "--amax must be keep or reset");
  request.set_amax_handling(amax == "reset" ? v1::AMAX_RESET : v1::AMAX_KEEP);
  request.set_checkpoint_first(c.cl.Has("--checkpoint-first"));
  auto response = c.client.UpdateRecipe(request);
  if (!response.ok()) return Fail(c.err, response.status());
  if (c.cl.json) {
    c.out << Json(*response) << "\n";
  } else {
    c.out << absl::StrFormat("recipe %s is version %d, effective before step %d, amax %s\n", p[3],
                             response->recipe_version(), response->effective_step(),
                             response->amax_handling() == v1::AMAX_RESET ? "reset" : "kept");
    if (!response->checkpoint().empty()) c.out << "checkpoint " << response->checkpoint() << "\n";
  }
  return kExitOk;
}

int CmdAmax(const Context& c) {
  if (c.cl.positional.size() != 2) return Usage(c.err, "amax needs JOB");
  v1::StreamAmaxRequest request;
  request.set_name(c.cl.positional[1]);
  request.set_layer_regex(c.cl.Get("--layer"));
  int64_t from = 0;
  if (!absl::SimpleAtoi(c.cl.Get("--from-step", "0"), &from) || from < 0) {
    return Usage(c.err, "--from-step must be a step number >= 0");
  }
  request.set_from_step(from);
  request.set_follow(c.cl.Has("--follow"));
  const bool csv = c.cl.Has("--csv");
  const bool table = !csv && !c.cl.json;
  if (csv) {
    c.out << "step,recipe_version,layer,role,format,amax,scale,frac_saturated,frac_underflow\n";
  }
  v1::AmaxRecord last;
  bool any = false;
  absl::Status s = c.client.StreamAmax(request, [&](const v1::AmaxRecord& r) {
    any = true;
    if (c.cl.json) {
      c.out << Json(r) << "\n";
    } else if (csv) {
      for (const auto& t : r.tensors()) {
        c.out << absl::StrFormat("%d,%d,%s,%s,%s,%g,%g,%g,%g\n", r.step(), r.recipe_version(),
                                 t.layer(), v1::TensorRole_Name(t.role()), t.format(), t.amax(),
                                 t.scale(), t.frac_saturated(), t.frac_underflow());
      }
    } else {
      last = r;  // the table shows the newest record
    }
    c.out.flush();
    return true;
  });
  if (!s.ok()) return Fail(c.err, s);
  if (table) {
    if (!any) {
      c.out << "no amax records (the recipe is bf16 or no step has run)\n";
      return kExitOk;
    }
    c.out << absl::StrFormat("step %d, recipe v%d\n", last.step(), last.recipe_version());
    c.out << absl::StrFormat("%-28s %-12s %-5s %12s %12s %9s %9s\n", "LAYER", "ROLE", "FMT", "AMAX",
                             "SCALE", "SAT%", "UFLOW%");
    for (const auto& t : last.tensors()) {
      c.out << absl::StrFormat("%-28s %-12s %-5s %12.5g %12.5g %9.4f %9.4f\n", t.layer(),
                               v1::TensorRole_Name(t.role()), t.format(), t.amax(), t.scale(),
                               100 * t.frac_saturated(), 100 * t.frac_underflow());
    }
  }
  return kExitOk;
}

int CmdCheckpoint(const Context& c) {
  const auto& p = c.cl.positional;
  if (p.size() < 3) return Usage(c.err, "expected `checkpoint save|list|pull JOB ...`");
  if (p[1] == "save" && p.size() == 3) {
    auto ck = c.client.SaveCheckpoint(p[2]);
    if (!ck.ok()) return Fail(c.err, ck.status());
    if (c.cl.json) {
      c.out << Json(*ck) << "\n";
    } else {
      c.out << "saved " << ck->name() << " at step " << ck->step() << " (" << ck->size_bytes()
            << " bytes, sha256 " << ck->sha256() << ")\n";
    }
    return kExitOk;
  }
  if (p[1] == "list" && p.size() == 3) {
    auto list = c.client.ListCheckpoints(p[2]);
    if (!list.ok()) return Fail(c.err, list.status());
    for (const auto& ck : *list) {
      if (c.cl.json) {
        c.out << Json(ck) << "\n";
      } else {
        c.out << absl::StrFormat("%-48s step %6d  %10d bytes  recipe v%d  %s\n", ck.name(),
                                 ck.step(), ck.size_bytes(), ck.recipe_version(), ck.sha256());
      }
    }
    return kExitOk;
  }
  if (p[1] == "pull" && (p.size() == 3 || p.size() == 4)) {
    const std::string out_path = c.cl.Get("--out");
    if (out_path.empty()) return Usage(c.err, "checkpoint pull needs --out PATH");
    std::string name = QualifyJobName(p[2]);
    if (p.size() == 4) {
      name = p[3].find('/') == std::string::npos ? absl::StrCat(name, "/checkpoints/", p[3]) : p[3];
    }
    const bool tty = !c.cl.json && isatty(STDERR_FILENO);
    auto result = c.client.PullCheckpoint(name, out_path, [&](int64_t done, int64_t total) {
      if (tty) {
        c.err << absl::StrFormat("\rpulling %.1f/%.1f MiB", done / 1048576.0, total / 1048576.0);
      }
    });
    if (tty) c.err << "\n";
    if (!result.ok()) return Fail(c.err, result.status());
    if (c.cl.json) {
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
  return Usage(c.err, "expected `checkpoint save|list JOB` or `checkpoint pull JOB [CHECKPOINT] --out PATH`");
}

int CmdJobAction(const Context& c, const std::string& verb) {
  if (c.cl.positional.size() != 2) return Usage(c.err, absl::StrCat(verb, " needs JOB"));
  const std::string& job = c.cl.positional[1];
  absl::StatusOr<v1::Job> result = verb == "pause"    ? c.client.PauseJob(job)
                                   : verb == "resume" ? c.client.ResumeJob(job)
                                                      : c.client.CancelJob(job);
  if (!result.ok()) return Fail(c.err, result.status());
  PrintJob(c, *result);
  return kExitOk;
}

}  // namespace

int RunCommand(const CommandLine& cl, std::ostream& out, std::ostream& err) {
  if (cl.Has("--help") || cl.positional.empty()) {
    (cl.positional.empty() && !cl.Has("--help") ? err : out) << UsageText();
    return cl.Has("--help") ? kExitOk : kExitUsage;
  }
  ClientOptions options;
  options.address = cl.addr;
  options.tls = cl.tls;
  options.tls_ca_file = cl.tls_ca;
  if (!cl.token_file.empty()) {
    auto token = ReadTokenFile(cl.token_file);
    if (!token.ok()) return Fail(err, token.status());
    options.token = *token;
  }
  auto client = TrainerClient::Connect(options);
  if (!client.ok()) return Fail(err, client.status());
  Context c{cl, out, err, **client};
  const std::string& cmd = cl.positional[0];
  if (cmd == "info") return CmdInfo(c);
  if (cmd == "submit") return CmdSubmit(c);
  if (cmd == "jobs") return CmdJobs(c);
  if (cmd == "show") return CmdShow(c);
  if (cmd == "watch") return CmdWatch(c);
  if (cmd == "recipe") return CmdRecipe(c);
  if (cmd == "amax") return CmdAmax(c);
  if (cmd == "checkpoint") return CmdCheckpoint(c);
  if (cmd == "pause" || cmd == "resume" || cmd == "cancel") return CmdJobAction(c, cmd);
  return Usage(err, absl::StrCat("unknown command `", cmd, "`"));
}

}  // namespace fp8d::client
