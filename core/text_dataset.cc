#include "core/text_dataset.h"

#include <sys/stat.h>

#include <cerrno>
#include <cstdio>
#include <memory>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"

namespace fp8d {

void ByteTokenize(std::string_view text, std::vector<int32_t>* out) {
  out->reserve(out->size() + text.size());
  for (char c : text) out->push_back(static_cast<unsigned char>(c));
}

std::string ByteDetokenize(const std::vector<int32_t>& tokens) {
  std::string out;
  out.reserve(tokens.size());
  for (int32_t t : tokens) out.push_back(t >= 0 && t < kByteVocabSize ? static_cast<char>(t) : '?');
  return out;
}

absl::Status ReadFileBytes(const std::string& path, std::string* out) {
  struct stat st;
  if (::stat(path.c_str(), &st) != 0) {
    return absl::ErrnoToStatus(errno, absl::StrCat("cannot open ", path));
  }
  if (!S_ISREG(st.st_mode)) return absl::NotFoundError(absl::StrCat(path, " is not a regular file"));
  std::unique_ptr<FILE, int (*)(FILE*)> f(std::fopen(path.c_str(), "rb"), &std::fclose);
  if (!f) return absl::ErrnoToStatus(errno, absl::StrCat("cannot open ", path));
  out->resize(static_cast<size_t>(st.st_size));
  const size_t n = out->empty() ? 0 : std::fread(out->data(), 1, out->size(), f.get());
  if (n != out->size()) {
    return absl::DataLossError(
        absl::StrCat("short read of ", path, ": ", n, " of ", out->size(), " bytes"));
  }
  return absl::OkStatus();
}

absl::Status ReadTextTokens(const std::string& path, std::vector<int32_t>* out) {
  std::string bytes;
  if (absl::Status s = ReadFileBytes(path, &bytes); !s.ok()) return s;
  ByteTokenize(bytes, out);
  return absl::OkStatus();
}

}  // namespace fp8d
