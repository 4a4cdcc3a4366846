#include "core/sha256.h"

#include <openssl/evp.h>

#include <array>
#include <cstdio>
#include <memory>

#include "absl/base/internal/raw_logging.h"
#include "absl/status/status.h"
#include "absl/strings/str_cat.h"

namespace fp8d {
namespace {

// Large enough that syscalls do not dominate, small enough to keep on any stack of threads.
constexpr size_t kFileChunkBytes = 1 << 20;

std::string ToHex(const unsigned char* digest, unsigned int len) {
  static constexpr char kHex[] = "0123456789abcdef";
  std::string out(2 * len, '0');
  for (unsigned int i = 0; i < len; ++i) {
    out[2 * i] = kHex[digest[i] >> 4];
    out[2 * i + 1] = kHex[digest[i] & 0xF];
  }
  return out;
}

}  // namespace

struct Sha256::Context {
  EVP_MD_CTX* md = nullptr;
};

Sha256::Sha256() : ctx_(std::make_unique<Context>()) {
  ctx_->md = EVP_MD_CTX_new();
  ABSL_RAW_CHECK(ctx_->md != nullptr, "EVP_MD_CTX_new failed");
  ABSL_RAW_CHECK(EVP_DigestInit_ex(ctx_->md, EVP_sha256(), nullptr) == 1, "SHA-256 init failed");
}

Sha256::~Sha256() { EVP_MD_CTX_free(ctx_->md); }

void Sha256::Update(std::string_view bytes) {
  ABSL_RAW_CHECK(EVP_DigestUpdate(ctx_->md, bytes.data(), bytes.size()) == 1, "SHA-256 update failed");
}

std::string Sha256::HexDigest() {
  unsigned char digest[EVP_MAX_MD_SIZE];
  unsigned int len = 0;
  ABSL_RAW_CHECK(EVP_DigestFinal_ex(ctx_->md, digest, &len) == 1, "SHA-256 final failed");
  return ToHex(digest, len);
}

std::string Sha256Hex(std::string_view bytes) {
  Sha256 sha;
  sha.Update(bytes);
  return sha.HexDigest();
}

absl::StatusOr<std::string> Sha256File(const std::string& path) {
  std::unique_ptr<FILE, int (*)(FILE*)> f(std::fopen(path.c_str(), "rb"), &std::fclose);
  if (!f) return absl::ErrnoToStatus(errno, absl::StrCat("cannot open ", path));
  Sha256 sha;
  std::unique_ptr<char[]> buf(new char[kFileChunkBytes]);
  while (true) {
    const size_t n = std::fread(buf.get(), 1, kFileChunkBytes, f.get());
    if (n > 0) sha.Update(std::string_view(buf.get(), n));
    if (n < kFileChunkBytes) {
      if (std::ferror(f.get())) return absl::ErrnoToStatus(errno, absl::StrCat("cannot read ", path));
      break;
    }
  }
  return sha.HexDigest();
}

}  // namespace fp8d
