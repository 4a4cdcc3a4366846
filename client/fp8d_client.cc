#include "client/fp8d_client.h"

#include <openssl/evp.h>

#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <grpcpp/grpcpp.h>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"

namespace fp8d::client {
namespace fs = std::filesystem;
namespace v1 = fp8d::v1;

namespace {

// Pages requested when listing everything; the daemon's maximum.
constexpr int kListPageSize = 500;

template <typename Response, typename Call>
absl::StatusOr<Response> Unary(const TrainerClient& client, int deadline_ms, Call call) {
  auto ctx = client.NewContext(deadline_ms);
  Response response;
  grpc::Status status = call(ctx.get(), &response);
  if (!status.ok()) return FromGrpc(status);
  return response;
}

std::string ReadAll(const std::string& path, bool* ok) {
  std::ifstream in(path, std::ios::binary);
  *ok = static_cast<bool>(in);
  return std::string(std::istreambuf_iterator<char>(in), {});
}

}  // namespace

absl::StatusOr<std::string> ReadTokenFile(const std::string& path) {
  bool ok = false;
  std::string text = ReadAll(path, &ok);
  if (!ok) return absl::NotFoundError(absl::StrCat("token file `", path, "` cannot be read"));
  std::string line = text.substr(0, text.find('\n'));
  return std::string(absl::StripAsciiWhitespace(line));
}

absl::Status FromGrpc(const grpc::Status& status) {
  if (status.ok()) return absl::OkStatus();
  return absl::Status(static_cast<absl::StatusCode>(status.error_code()), status.error_message());
}

std::string QualifyJobName(const std::string& job) {
  return absl::StartsWith(job, "jobs/") ? job : absl::StrCat("jobs/", job);
}

absl::StatusOr<std::unique_ptr<TrainerClient>> TrainerClient::Connect(
    const ClientOptions& options) {
  if (options.address.empty()) {
    return absl::InvalidArgumentError("--addr is empty: expected HOST:PORT");
  }
  std::shared_ptr<grpc::ChannelCredentials> creds;
  if (options.tls) {
    grpc::SslCredentialsOptions ssl;
    if (!options.tls_ca_file.empty()) {
      bool ok = false;
      ssl.pem_root_certs = ReadAll(options.tls_ca_file, &ok);
      if (!ok) {
        return absl::NotFoundError(
            absl::StrCat("TLS CA file `", options.tls_ca_file, "` cannot be read"));
      }
    }
    creds = grpc::SslCredentials(ssl);
  } else {
    creds = grpc::InsecureChannelCredentials();
  }
  grpc::ChannelArguments args;
  args.SetMaxReceiveMessageSize(8 * 1024 * 1024);
  auto channel = grpc::CreateCustomChannel(options.address, creds, args);
  return std::unique_ptr<TrainerClient>(new TrainerClient(options, std::move(channel)));
}

TrainerClient::TrainerClient(ClientOptions options, std::shared_ptr<grpc::Channel> channel)
    : options_(std::move(options)),
      channel_(std::move(channel)),
      stub_(v1::Trainer::NewStub(channel_)) {}

std::unique_ptr<grpc::ClientContext> TrainerClient::NewContext(int deadline_ms) const {
  auto ctx = std::make_unique<grpc::ClientContext>();
  if (!options_.token.empty()) {
    ctx->AddMetadata("authorization", absl::StrCat("Bearer ", options_.token));
  }
  if (deadline_ms > 0) {
    ctx->set_deadline(std::chrono::system_clock::now() + std::chrono::milliseconds(deadline_ms));
  }
  return ctx;
}

absl::StatusOr<v1::ServerInfo> TrainerClient::GetServerInfo() {
  return Unary<v1::ServerInfo>(*this, options_.unary_timeout_ms, [&](auto* ctx, auto* out) {
    return stub_->GetServerInfo(ctx, v1::GetServerInfoRequest(), out);
  });
}

absl::StatusOr<v1::Job> TrainerClient::SubmitJob(const v1::SubmitJobRequest& request) {
  return Unary<v1::Job>(*this, options_.unary_timeout_ms, [&](auto* ctx, auto* out) {
    return stub_->SubmitJob(ctx, request, out);
  });
}

absl::StatusOr<v1::Job> TrainerClient::SubmitJobText(const std::string& text,
                                                     const std::vector<std::string>& sets,
                                                     const std::string& request_id,
                                                     const std::string& file_name) {
  v1::SubmitJobRequest request;
  request.set_spec_text(text);
  request.set_spec_file(file_name);
  for (const auto& s : sets) request.add_set(s);
  request.set_request_id(request_id);
  return SubmitJob(request);
}

absl::StatusOr<v1::Job> TrainerClient::GetJob(const std::string& job) {
  v1::GetJobRequest request;
  request.set_name(QualifyJobName(job));
  return Unary<v1::Job>(*this, options_.unary_timeout_ms, [&](auto* ctx, auto* out) {
    return stub_->GetJob(ctx, request, out);
  });
}

absl::StatusOr<v1::ListJobsResponse> TrainerClient::ListJobs(int page_size,
                                                             const std::string& token) {
  v1::ListJobsRequest request;
  request.set_page_size(page_size);
  request.set_page_token(token);
  return Unary<v1::ListJobsResponse>(*this, options_.unary_timeout_ms, [&](auto* ctx, auto* out) {
    return stub_->ListJobs(ctx, request, out);
  });
}

absl::StatusOr<std::vector<v1::Job>> TrainerClient::ListAllJobs() {
  std::vector<v1::Job> jobs;
  std::string token;
  do {
    auto page = ListJobs(kListPageSize, token);
    if (!page.ok()) return page.status();
    for (auto& j : *page->mutable_jobs()) jobs.push_back(std::move(j));
    token = page->next_page_token();
  } while (!token.empty());
  return jobs;
}

absl::StatusOr<v1::Job> TrainerClient::CancelJob(const std::string& job) {
  v1::CancelJobRequest request;
  request.set_name(QualifyJobName(job));
  return Unary<v1::Job>(*this, options_.unary_timeout_ms, [&](auto* ctx, auto* out) {
    return stub_->CancelJob(ctx, request, out);
  });
}

absl::StatusOr<v1::DeleteJobResponse> TrainerClient::DeleteJob(const std::string& job) {
  v1::DeleteJobRequest request;
  request.set_name(QualifyJobName(job));
  // Removing a large job's checkpoints takes as long as the file system needs: no short deadline.
  return Unary<v1::DeleteJobResponse>(*this, 0, [&](auto* ctx, auto* out) {
    return stub_->DeleteJob(ctx, request, out);
  });
}

absl::StatusOr<v1::Job> TrainerClient::PauseJob(const std::string& job) {
  v1::PauseJobRequest request;
  request.set_name(QualifyJobName(job));
  return Unary<v1::Job>(*this, options_.unary_timeout_ms, [&](auto* ctx, auto* out) {
    return stub_->PauseJob(ctx, request, out);
  });
}

absl::StatusOr<v1::Job> TrainerClient::ResumeJob(const std::string& job) {
  v1::ResumeJobRequest request;
  request.set_name(QualifyJobName(job));
  return Unary<v1::Job>(*this, options_.unary_timeout_ms, [&](auto* ctx, auto* out) {
    return stub_->ResumeJob(ctx, request, out);
  });
}

absl::StatusOr<v1::UpdateRecipeResponse> TrainerClient::UpdateRecipe(
    const v1::UpdateRecipeRequest& request) {
  v1::UpdateRecipeRequest qualified = request;
  qualified.set_name(QualifyJobName(request.name()));
  // checkpoint_first waits for a checkpoint to be written: no short deadline.
  return Unary<v1::UpdateRecipeResponse>(*this, 0, [&](auto* ctx, auto* out) {
    return stub_->UpdateRecipe(ctx, qualified, out);
  });
}

absl::StatusOr<v1::RecipeState> TrainerClient::GetRecipe(const std::string& job) {
  v1::GetRecipeRequest request;
  request.set_name(QualifyJobName(job));
  return Unary<v1::RecipeState>(*this, options_.unary_timeout_ms, [&](auto* ctx, auto* out) {
    return stub_->GetRecipe(ctx, request, out);
  });
}

absl::StatusOr<v1::Checkpoint> TrainerClient::SaveCheckpoint(const std::string& job) {
  v1::SaveCheckpointRequest request;
  request.set_name(QualifyJobName(job));
  return Unary<v1::Checkpoint>(*this, 0, [&](auto* ctx, auto* out) {
    return stub_->SaveCheckpoint(ctx, request, out);
  });
}

absl::StatusOr<std::vector<v1::Checkpoint>> TrainerClient::ListCheckpoints(
    const std::string& job) {
  v1::ListCheckpointsRequest request;
  request.set_name(QualifyJobName(job));
  std::vector<v1::Checkpoint> all;
  do {  // every page
    auto response = Unary<v1::ListCheckpointsResponse>(
        *this, options_.unary_timeout_ms,
        [&](auto* ctx, auto* out) { return stub_->ListCheckpoints(ctx, request, out); });
    if (!response.ok()) return response.status();
    all.insert(all.end(), response->checkpoints().begin(), response->checkpoints().end());
    request.set_page_token(response->next_page_token());
  } while (!request.page_token().empty());
  return all;
}

absl::Status TrainerClient::StreamMetrics(const v1::StreamMetricsRequest& request,
                                          const MetricCallback& on_record) {
  v1::StreamMetricsRequest qualified = request;
  qualified.set_name(QualifyJobName(request.name()));
  auto ctx = NewContext(0);
  auto reader = stub_->StreamMetrics(ctx.get(), qualified);
  v1::MetricRecord record;
  while (reader->Read(&record)) {
    if (!on_record(record)) {
      ctx->TryCancel();
      reader->Finish();
      return absl::OkStatus();
    }
  }
  return FromGrpc(reader->Finish());
}

absl::Status TrainerClient::StreamAmax(const v1::StreamAmaxRequest& request,
                                       const AmaxCallback& on_record) {
  v1::StreamAmaxRequest qualified = request;
  qualified.set_name(QualifyJobName(request.name()));
  auto ctx = NewContext(0);
  auto reader = stub_->StreamAmax(ctx.get(), qualified);
  v1::AmaxRecord record;
  while (reader->Read(&record)) {
    if (!on_record(record)) {
      ctx->TryCancel();
      reader->Finish();
      return absl::OkStatus();
    }
  }
  return FromGrpc(reader->Finish());
}

absl::StatusOr<PullResult> TrainerClient::PullOnce(const std::string& name,
                                                   const std::string& out_path,
                                                   const PullProgress& progress) {
  const std::string partial = out_path + ".partial";
  std::error_code ec;
  const int64_t have = fs::exists(partial, ec) ? static_cast<int64_t>(fs::file_size(partial, ec)) : 0;

  v1::PullCheckpointRequest request;
  request.set_name(name);
  request.set_offset(have);
  auto ctx = NewContext(0);
  auto reader = stub_->PullCheckpoint(ctx.get(), request);

  std::ofstream out(partial, std::ios::binary | std::ios::app);
  if (!out) {
    ctx->TryCancel();
    reader->Finish();
    return absl::FailedPreconditionError(absl::StrCat("cannot write `", partial, "`"));
  }
  PullResult result;
  result.path = out_path;
  result.resumed_from = have;
  int64_t offset = have;
  v1::CheckpointChunk chunk;
  while (reader->Read(&chunk)) {
    if (chunk.offset() != offset) {
      ctx->TryCancel();
      reader->Finish();
      return absl::DataLossError(absl::StrCat("chunk at offset ", chunk.offset(),
                                              " does not follow byte ", offset));
    }
    result.checkpoint = chunk.checkpoint();
    result.size_bytes = chunk.total_size();
    result.sha256 = chunk.sha256();
    out.write(chunk.data().data(), static_cast<std::streamsize>(chunk.data().size()));
    offset += static_cast<int64_t>(chunk.data().size());
    if (progress) progress(offset, chunk.total_size());
  }
  out.close();
  if (absl::Status s = FromGrpc(reader->Finish()); !s.ok()) return s;
  if (!out) return absl::FailedPreconditionError(absl::StrCat("cannot write `", partial, "`"));
  if (offset != result.size_bytes) {
    return absl::DataLossError(absl::StrCat("pulled ", offset, " of ", result.size_bytes,
                                            " bytes; run the pull again to resume"));
  }
  auto sha = FileSha256(partial);
  if (!sha.ok()) return sha.status();
  if (*sha != result.sha256) {
    return absl::DataLossError(absl::StrCat("SHA-256 of `", partial, "` is ", *sha,
                                            ", the daemon reports ", result.sha256));
  }
  fs::rename(partial, out_path, ec);
  if (ec) {
    return absl::FailedPreconditionError(
        absl::StrCat("cannot rename `", partial, "` to `", out_path, "`: ", ec.message()));
  }
  return result;
}

absl::StatusOr<PullResult> TrainerClient::PullCheckpoint(const std::string& name,
                                                         const std::string& out_path,
                                                         const PullProgress& progress) {
  auto result = PullOnce(name, out_path, progress);
  const std::string partial = out_path + ".partial";
  std::error_code ec;
  // A partial left by a pull of another checkpoint (the latest moved on) or a longer file does
  // not verify: start over once from byte 0.
  if (!result.ok() && (absl::IsDataLoss(result.status()) || absl::IsOutOfRange(result.status())) &&
      fs::exists(partial, ec)) {
    fs::remove(partial, ec);
    result = PullOnce(name, out_path, progress);
  }
  return result;
}

absl::StatusOr<std::string> FileSha256(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return absl::NotFoundError(absl::StrCat("`", path, "` cannot be read"));
  EVP_MD_CTX* md = EVP_MD_CTX_new();
  EVP_DigestInit_ex(md, EVP_sha256(), nullptr);
  std::vector<char> buf(1 << 20);
  while (in) {
    in.read(buf.data(), static_cast<std::streamsize>(buf.size()));
    if (in.gcount() > 0) EVP_DigestUpdate(md, buf.data(), static_cast<size_t>(in.gcount()));
  }
  unsigned char digest[EVP_MAX_MD_SIZE];
  unsigned int len = 0;
  EVP_DigestFinal_ex(md, digest, &len);
  EVP_MD_CTX_free(md);
  static constexpr char kHex[] = "0123456789abcdef";
  std::string hex;
  for (unsigned int i = 0; i < len; ++i) {
    hex.push_back(kHex[digest[i] >> 4]);
    hex.push_back(kHex[digest[i] & 15]);
  }
  return hex;
}

}  // namespace fp8d::client
