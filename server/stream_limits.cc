#include "server/stream_limits.h"

#include <grpcpp/server_context.h>

#include <algorithm>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "spdlog/spdlog.h"

namespace fp8d {
namespace {

const char* PoolName(StreamPool pool) {
  return pool == StreamPool::kFollow ? "metric/amax streams" : "checkpoint pulls";
}
StreamPoolLimits LimitsOf(StreamPool pool) {
  return pool == StreamPool::kFollow ? kFollowStreamLimits : kPullLimits;
}

}  // namespace

std::string ClientKeyOf(const std::string& peer) {
  // gRPC peers: "ipv4:127.0.0.1:5000", "ipv6:[::1]:5000", "unix:/path".
  const size_t colon = peer.rfind(':');
  if (!absl::StartsWith(peer, "ipv4:") && !absl::StartsWith(peer, "ipv6:")) return peer;
  if (colon == std::string::npos || colon < 5) return peer;
  const std::string host = peer.substr(0, colon);
  if (absl::StartsWith(host, "ipv4:127.") || host == "ipv6:[::1]" ||
      absl::StartsWith(host, "ipv6:[::ffff:127.")) {
    return peer;
  }
  return host;
}

StreamLimiter::Slot::~Slot() {
  if (limiter_ != nullptr) limiter_->Release(pool_, client_);
}

absl::Status StreamLimiter::Acquire(const std::string& peer, StreamPool pool,
                                    std::optional<Slot>* slot) {
  const std::string client = ClientKeyOf(peer);
  const StreamPoolLimits limits = LimitsOf(pool);
  absl::MutexLock lock(&mu_);
  Usage& usage = pool == StreamPool::kFollow ? follow_ : pull_;
  int& mine = usage.per_client[client];
  if (mine >= limits.per_client) {
    if (mine == 0) usage.per_client.erase(client);
    return absl::ResourceExhaustedError(absl::StrCat(
        "too many concurrent ", PoolName(pool), " from this client: the limit is ",
        limits.per_client, " per client; end one (or wait for a stalled one to time out)"));
  }
  if (usage.total >= limits.total) {
    if (mine == 0) usage.per_client.erase(client);
    return absl::ResourceExhaustedError(absl::StrCat("too many concurrent ", PoolName(pool),
                                                     ": the limit is ", limits.total));
  }
  ++mine;
  ++usage.total;
  slot->emplace(this, pool, client);
  return absl::OkStatus();
}

int StreamLimiter::open() {
  absl::MutexLock lock(&mu_);
  return follow_.total + pull_.total;
}

void StreamLimiter::Release(StreamPool pool, const std::string& client) {
  absl::MutexLock lock(&mu_);
  Usage& usage = pool == StreamPool::kFollow ? follow_ : pull_;
  --usage.total;
  auto it = usage.per_client.find(client);
  if (it != usage.per_client.end() && --it->second <= 0) usage.per_client.erase(it);
}

StallWatchdog::StallWatchdog(absl::Duration timeout)
    : timeout_(timeout), thread_([this] { Loop(); }) {}

StallWatchdog::~StallWatchdog() {
  {
    absl::MutexLock lock(&mu_);
    stop_ = true;
  }
  thread_.join();
}

void StallWatchdog::Loop() {
  // Checking a few times per timeout keeps the worst case near 1.25 x the timeout.
  const absl::Duration tick =
      std::clamp(timeout_ / 4, absl::Milliseconds(50), absl::Seconds(1));
  absl::MutexLock lock(&mu_);
  while (!stop_) {
    mu_.AwaitWithTimeout(absl::Condition(&stop_), tick);
    const absl::Time now = absl::Now();
    for (auto& [id, write] : writes_) {
      if (!write.cancelled && now - write.since > timeout_) {
        spdlog::warn("{}: a stream write waited over {}: the client stopped reading; cancelling",
                     write.ctx->peer(), absl::FormatDuration(timeout_));
        write.cancelled = true;
        write.ctx->TryCancel();  // under mu_: the guard cannot end and free ctx meanwhile
      }
    }
  }
}

StallWatchdog::WriteGuard::WriteGuard(StallWatchdog* watchdog, grpc::ServerContext* ctx)
    : watchdog_(watchdog) {
  absl::MutexLock lock(&watchdog_->mu_);
  id_ = watchdog_->next_id_++;
  watchdog_->writes_[id_] = Write{ctx, absl::Now()};
}

StallWatchdog::WriteGuard::~WriteGuard() {
  absl::MutexLock lock(&watchdog_->mu_);
  watchdog_->writes_.erase(id_);
}

}  // namespace fp8d
