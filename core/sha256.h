// SHA-256 over byte strings and files (OpenSSL EVP), hex encoded. Checkpoint integrity and
// checkpoint pulls both use it.
#pragma once

#include <memory>
#include <string>
#include <string_view>

#include "absl/status/statusor.h"

namespace fp8d {

std::string Sha256Hex(std::string_view bytes);
// Streams the file in fixed-size chunks, so checkpoints of any size hash in constant memory.
// NOT_FOUND when the file cannot be opened.
absl::StatusOr<std::string> Sha256File(const std::string& path);

// Incremental form, for data that is produced piece by piece (a checkpoint's tensors).
class Sha256 {
 public:
  Sha256();
  ~Sha256();
  Sha256(const Sha256&) = delete;
  Sha256& operator=(const Sha256&) = delete;

  void Update(std::string_view bytes);
  // Lower-case hex digest; the object must not be updated afterwards.
  std::string HexDigest();

 private:
  struct Context;
  std::unique_ptr<Context> ctx_;
};

}  // namespace fp8d
