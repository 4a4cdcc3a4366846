// Bounds on the long-lived calls of fp8d.v1.Trainer, so no client can lock others out:
//  - Two pools kept apart: follow streams (StreamMetrics, StreamAmax) and checkpoint pulls, each
//    with a total and a per-client limit; a full pool answers RESOURCE_EXHAUSTED naming it.
//  - A stream whose client stops reading is cancelled once one write has waited longer than the
//    stall timeout, which frees its slot (the client can reconnect and resume by step/offset).
// A client is a peer host; on loopback, where every local user shares 127.0.0.1, a client is
// one connection (peer host and port).
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <thread>

#include "absl/status/status.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"

namespace grpc {
class ServerContext;
}

namespace fp8d {

enum class StreamPool { kFollow, kPull };

struct StreamPoolLimits {
  int total;
  int per_client;
};
inline constexpr StreamPoolLimits kFollowStreamLimits{128, 32};
inline constexpr StreamPoolLimits kPullLimits{16, 4};
inline constexpr absl::Duration kDefaultStallTimeout = absl::Seconds(60);

// "ipv4:10.0.0.5:41234" -> "ipv4:10.0.0.5"; loopback peers keep their port (see above).
std::string ClientKeyOf(const std::string& peer);

class StreamLimiter {
 public:
  // Holds one slot of a pool until destroyed.
  class Slot {
   public:
    Slot(StreamLimiter* limiter, StreamPool pool, std::string client)
        : limiter_(limiter), pool_(pool), client_(std::move(client)) {}
    Slot(Slot&& other) noexcept
        : limiter_(other.limiter_), pool_(other.pool_), client_(std::move(other.client_)) {
      other.limiter_ = nullptr;
    }
    Slot(const Slot&) = delete;
    Slot& operator=(const Slot&) = delete;
    Slot& operator=(Slot&&) = delete;
    ~Slot();

   private:
    StreamLimiter* limiter_;
    StreamPool pool_;
    std::string client_;
  };

  // RESOURCE_EXHAUSTED naming the pool and the limit that was reached.
  absl::Status Acquire(const std::string& peer, StreamPool pool, std::optional<Slot>* slot);
  // Slots held now, in both pools.
  int open();

 private:
  struct Usage {
    int total = 0;
    std::map<std::string, int> per_client;
  };
  void Release(StreamPool pool, const std::string& client);

  absl::Mutex mu_;
  Usage follow_ ABSL_GUARDED_BY(mu_);
  Usage pull_ ABSL_GUARDED_BY(mu_);
};

// Cancels calls whose current write has waited longer than the timeout (the client stopped
// reading and the transport's flow-control window is full).
class StallWatchdog {
 public:
  explicit StallWatchdog(absl::Duration timeout);
  ~StallWatchdog();
  StallWatchdog(const StallWatchdog&) = delete;
  StallWatchdog& operator=(const StallWatchdog&) = delete;

  // Marks one write of `ctx` as in progress for its lifetime.
  class WriteGuard {
   public:
    WriteGuard(StallWatchdog* watchdog, grpc::ServerContext* ctx);
    ~WriteGuard();
    WriteGuard(const WriteGuard&) = delete;
    WriteGuard& operator=(const WriteGuard&) = delete;

   private:
    StallWatchdog* watchdog_;
    int64_t id_;
  };

  absl::Duration timeout() const { return timeout_; }

 private:
  struct Write {
    grpc::ServerContext* ctx;
    absl::Time since;
    bool cancelled = false;
  };
  void Loop();

  const absl::Duration timeout_;
  absl::Mutex mu_;
  std::map<int64_t, Write> writes_ ABSL_GUARDED_BY(mu_);
  int64_t next_id_ ABSL_GUARDED_BY(mu_) = 0;
  bool stop_ ABSL_GUARDED_BY(mu_) = false;
  std::thread thread_;
};

}  // namespace fp8d
