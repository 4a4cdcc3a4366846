#include "client/interrupt_message.h"

#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <csignal>
#include <cstring>

namespace fp8d::client {
namespace {

constexpr size_t kMaxMessage = 1024;
char g_message[kMaxMessage];
std::atomic<size_t> g_length{0};

void OnInterrupt(int) {
  const size_t n = g_length.load(std::memory_order_acquire);
  ssize_t ignored = write(STDERR_FILENO, "\n", 1);
  ignored = write(STDERR_FILENO, g_message, n);
  (void)ignored;
  _exit(kExitInterrupted);
}

}  // namespace

void InstallInterruptHandler(const std::string& message) {
  const size_t n = std::min(message.size() + 1, kMaxMessage);
  std::memcpy(g_message, message.data(), n - 1);
  g_message[n - 1] = '\n';
  g_length.store(n, std::memory_order_release);
  std::signal(SIGINT, OnInterrupt);
}

}  // namespace fp8d::client
