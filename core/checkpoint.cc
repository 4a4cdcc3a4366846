#include "core/checkpoint.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <filesystem>
#include <string_view>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"
#include "core/safetensors.h"
#include "core/sha256.h"
#include "google/protobuf/util/json_util.h"

namespace fp8d {
namespace fs = std::filesystem;

namespace {

absl::Status CheckpointLoss(const std::string& path, absl::string_view reason) {
  return absl::DataLossError(absl::StrCat("checkpoint ", path, ": ", reason));
}

// Closes the descriptor on every path out of a function.
class Fd {
 public:
  explicit Fd(int fd) : fd_(fd) {}
  ~Fd() {
    if (fd_ >= 0) ::close(fd_);
  }
  Fd(const Fd&) = delete;
  Fd& operator=(const Fd&) = delete;
  int get() const { return fd_; }
  void reset(int fd) {
    if (fd_ >= 0) ::close(fd_);
    fd_ = fd;
  }
  int release() {
    const int fd = fd_;
    fd_ = -1;
    return fd;
  }

 private:
  int fd_;
};

absl::Status WriteAll(int fd, const char* p, size_t n, const std::string& path) {
  while (n > 0) {
    const ssize_t w = ::write(fd, p, n);
    if (w < 0) {
      if (errno == EINTR) continue;
      return absl::ErrnoToStatus(errno, absl::StrCat("cannot write ", path));
    }
    p += w;
    n -= static_cast<size_t>(w);
  }
  return absl::OkStatus();
}

absl::Status ReadAll(int fd, char* p, size_t n, const std::string& path) {
  while (n > 0) {
    const ssize_t r = ::read(fd, p, n);
    if (r < 0) {
      if (errno == EINTR) continue;
      return absl::ErrnoToStatus(errno, absl::StrCat("cannot read ", path));
    }
    if (r == 0) return CheckpointLoss(path, "file ended early");
    p += r;
    n -= static_cast<size_t>(r);
  }
  return absl::OkStatus();
}

// Opens an existing regular file for reading and returns its size.
absl::StatusOr<int64_t> OpenCheckpoint(const std::string& path, Fd* fd) {
  struct stat st;
  if (::stat(path.c_str(), &st) != 0) {
    if (errno == ENOENT || errno == ENOTDIR) {
      return absl::NotFoundError(absl::StrCat("checkpoint ", path, " does not exist"));
    }
    return absl::ErrnoToStatus(errno, absl::StrCat("cannot stat checkpoint ", path));
  }
  if (!S_ISREG(st.st_mode)) {
    return absl::NotFoundError(absl::StrCat("checkpoint ", path, " is not a regular file"));
  }
  fd->reset(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
  if (fd->get() < 0) return absl::ErrnoToStatus(errno, absl::StrCat("cannot open checkpoint ", path));
  return static_cast<int64_t>(st.st_size);
}

absl::StatusOr<fp8d::v1::CheckpointMetadata> MetadataFromHeader(const SafetensorsHeader& header,
                                                                const std::string& path) {
  auto it = header.metadata.find(kCheckpointMetadataKey);
  if (it == header.metadata.end()) {
    return CheckpointLoss(path, "no fp8d metadata (not an fp8d checkpoint?)");
  }
  fp8d::v1::CheckpointMetadata meta;
  google::protobuf::util::JsonParseOptions options;
  options.ignore_unknown_fields = true;  // newer minor additions stay readable
  if (auto s = google::protobuf::util::JsonStringToMessage(it->second, &meta, options); !s.ok()) {
    return CheckpointLoss(path, absl::StrCat("fp8d metadata is not valid: ", std::string(s.message())));
  }
  if (meta.format_version() > kCheckpointFormatVersion) {
    return absl::FailedPreconditionError(absl::StrCat(
        "checkpoint ", path, " has format_version ", meta.format_version(),
        "; this build reads up to ", kCheckpointFormatVersion));
  }
  return meta;
}

// A read-only mapping of a whole file: a checkpoint is hashed and converted without a second
// in-memory copy of its bytes.
class MappedFile {
 public:
  ~MappedFile() {
    if (data_ != nullptr) ::munmap(data_, size_);
  }
  absl::Status Map(int fd, int64_t size, const std::string& path) {
    size_ = static_cast<size_t>(size);
    if (size_ == 0) return absl::OkStatus();
    void* p = ::mmap(nullptr, size_, PROT_READ, MAP_PRIVATE, fd, 0);
    if (p == MAP_FAILED) return absl::ErrnoToStatus(errno, absl::StrCat("cannot map ", path));
    data_ = p;
    return absl::OkStatus();
  }
  std::string_view view() const {
    return data_ == nullptr ? std::string_view() : std::string_view(static_cast<const char*>(data_), size_);
  }

 private:
  void* data_ = nullptr;
  size_t size_ = 0;
};

std::string TempPathFor(const fs::path& target) {
  static std::atomic<uint64_t> counter{0};
  return (target.parent_path() /
          absl::StrCat(".", target.filename().string(), ".tmp-", ::getpid(), "-", counter++))
      .string();
}

absl::Status FsyncDirectory(const fs::path& dir) {
  Fd d(::open(dir.empty() ? "." : dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  if (d.get() < 0) return absl::ErrnoToStatus(errno, absl::StrCat("cannot open directory ", dir.string()));
  if (::fsync(d.get()) != 0) {
    return absl::ErrnoToStatus(errno, absl::StrCat("cannot fsync directory ", dir.string()));
  }
  return absl::OkStatus();
}

}  // namespace

absl::Status WriteCheckpoint(const std::string& path, const TensorMap& tensors,
                             const fp8d::v1::CheckpointMetadata& meta) {
  fp8d::v1::CheckpointMetadata m = meta;
  if (m.format_version() == 0) m.set_format_version(kCheckpointFormatVersion);
  std::string meta_json;
  if (auto s = google::protobuf::util::MessageToJsonString(m, &meta_json); !s.ok()) {
    return absl::InternalError(absl::StrCat("cannot encode checkpoint metadata: ", std::string(s.message())));
  }
  // The hash covers exactly the bytes that follow the header: each tensor's floats in name order.
  Sha256 sha;
  for (const auto& [name, t] : tensors) {
    sha.Update(std::string_view(reinterpret_cast<const char*>(t.data.data()),
                                t.data.size() * sizeof(float)));
  }
  absl::StatusOr<std::string> header = SerializeSafetensorsHeader(
      tensors, {{kCheckpointMetadataKey, meta_json}, {kCheckpointDataShaKey, sha.HexDigest()}});
  if (!header.ok()) return header.status();

  const fs::path target(path);
  std::error_code ec;
  if (!target.parent_path().empty()) {
    fs::create_directories(target.parent_path(), ec);
    if (ec) {
      return absl::ErrnoToStatus(ec.value(), absl::StrCat("cannot create directory ",
                                                          target.parent_path().string()));
    }
  }
  const std::string tmp = TempPathFor(target);
  Fd fd(::open(tmp.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644));
  if (fd.get() < 0) return absl::ErrnoToStatus(errno, absl::StrCat("cannot create ", tmp));

  absl::Status s = WriteAll(fd.get(), header->data(), header->size(), tmp);
  for (auto it = tensors.begin(); s.ok() && it != tensors.end(); ++it) {
    s = WriteAll(fd.get(), reinterpret_cast<const char*>(it->second.data.data()),
                 it->second.data.size() * sizeof(float), tmp);
  }
  if (s.ok() && ::fsync(fd.get()) != 0) s = absl::ErrnoToStatus(errno, absl::StrCat("cannot fsync ", tmp));
  if (s.ok() && ::close(fd.release()) != 0) s = absl::ErrnoToStatus(errno, absl::StrCat("cannot close ", tmp));
  if (s.ok() && ::rename(tmp.c_str(), path.c_str()) != 0) {
    s = absl::ErrnoToStatus(errno, absl::StrCat("cannot rename ", tmp, " to ", path));
  }
  if (!s.ok()) {
    ::unlink(tmp.c_str());
    return s;
  }
  // The rename is durable only once the directory entry is on disk.
  return FsyncDirectory(target.parent_path());
}

absl::StatusOr<LoadedCheckpoint> ReadCheckpoint(const std::string& path) {
  Fd fd(-1);
  absl::StatusOr<int64_t> size = OpenCheckpoint(path, &fd);
  if (!size.ok()) return size.status();
  MappedFile file;
  if (absl::Status s = file.Map(fd.get(), *size, path); !s.ok()) return s;
  const std::string_view bytes = file.view();

  absl::StatusOr<SafetensorsHeader> header = ParseSafetensorsHeader(bytes, *size);
  if (!header.ok()) return CheckpointLoss(path, header.status().message());
  auto sha = header->metadata.find(kCheckpointDataShaKey);
  if (sha == header->metadata.end()) return CheckpointLoss(path, "no fp8d.data_sha256 in metadata");
  const std::string actual = Sha256Hex(bytes.substr(header->data_offset));
  if (actual != sha->second) {
    return CheckpointLoss(path, absl::StrCat("data SHA-256 is ", actual, " but the header records ",
                                             sha->second, " (corrupted)"));
  }
  absl::StatusOr<fp8d::v1::CheckpointMetadata> meta = MetadataFromHeader(*header, path);
  if (!meta.ok()) return meta.status();
  absl::StatusOr<SafetensorsFile> parsed = ParseSafetensors(bytes);
  if (!parsed.ok()) return CheckpointLoss(path, parsed.status().message());
  LoadedCheckpoint out;
  out.tensors = std::move(parsed->tensors);
  out.meta = *std::move(meta);
  return out;
}

absl::StatusOr<fp8d::v1::CheckpointMetadata> ReadCheckpointMetadata(const std::string& path) {
  Fd fd(-1);
  absl::StatusOr<int64_t> size = OpenCheckpoint(path, &fd);
  if (!size.ok()) return size.status();
  std::string prefix(8, '\0');
  if (*size < 8) return CheckpointLoss(path, absl::StrCat("file is only ", *size, " bytes"));
  if (absl::Status s = ReadAll(fd.get(), prefix.data(), 8, path); !s.ok()) return s;
  absl::StatusOr<int64_t> len = SafetensorsHeaderLength(prefix, *size);
  if (!len.ok()) return CheckpointLoss(path, len.status().message());
  prefix.resize(8 + *len);
  if (absl::Status s = ReadAll(fd.get(), prefix.data() + 8, *len, path); !s.ok()) return s;
  absl::StatusOr<SafetensorsHeader> header = ParseSafetensorsHeader(prefix, *size);
  if (!header.ok()) return CheckpointLoss(path, header.status().message());
  return MetadataFromHeader(*header, path);
}

}  // namespace fp8d
