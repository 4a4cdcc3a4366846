#include "core/checkpoint.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <signal.h>

#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstdlib>
#include <fstream>
#include <thread>
#include <filesystem>
#include <string_view>

#include "absl/status/status.h"
#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
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

// The content hash: what the header says (every metadata entry but the hash itself, and each
// tensor's name, dtype, shape and offsets) followed by the data section. Framed with NUL and
// newline separators so no two different headers hash the same bytes.
void HashHeaderMeaning(const SafetensorsHeader& header, Sha256* sha) {
  sha->Update("fp8d checkpoint content v2\n");
  for (const auto& [key, value] : header.metadata) {
    if (key == kCheckpointContentShaKey) continue;
    sha->Update(key);
    sha->Update(std::string_view("\0", 1));
    sha->Update(value);
    sha->Update(std::string_view("\0", 1));
  }
  for (const SafetensorsEntry& e : header.entries) {
    std::string line = absl::StrCat(e.name, absl::string_view("\0", 1), e.dtype, ":");
    for (int64_t d : e.shape) absl::StrAppend(&line, d, ",");
    absl::StrAppend(&line, ":", e.begin, ",", e.end, "\n");
    sha->Update(line);
  }
}

// Checks the content hash of a mapped checkpoint (format 2) or the data hash (format 1).
absl::Status CheckContentHash(const SafetensorsHeader& header, std::string_view bytes,
                              const std::string& path) {
  const std::string_view data = bytes.substr(header.data_offset);
  if (auto it = header.metadata.find(kCheckpointContentShaKey); it != header.metadata.end()) {
    Sha256 sha;
    HashHeaderMeaning(header, &sha);
    sha.Update(data);
    const std::string actual = sha.HexDigest();
    if (actual != it->second) {
      return CheckpointLoss(path, absl::StrCat("content SHA-256 (header and data) is ", actual,
                                               " but the file records ", it->second,
                                               " (corrupted or edited)"));
    }
    return absl::OkStatus();
  }
  auto legacy = header.metadata.find(kCheckpointDataShaKey);
  if (legacy == header.metadata.end()) {
    return CheckpointLoss(path, "no fp8d.sha256 in metadata");
  }
  const std::string actual = Sha256Hex(data);
  if (actual != legacy->second) {
    return CheckpointLoss(path, absl::StrCat("data SHA-256 is ", actual,
                                             " but the header records ", legacy->second,
                                             " (corrupted)"));
  }
  return absl::OkStatus();
}

// The pause of kCheckpointWriteDelayVariable, read once.
std::chrono::milliseconds WriteDelay() {
  static const std::chrono::milliseconds delay = [] {
    const char* v = std::getenv(kCheckpointWriteDelayVariable);
    int ms = 0;
    if (v == nullptr || !absl::SimpleAtoi(v, &ms) || ms < 0) ms = 0;
    return std::chrono::milliseconds(ms);
  }();
  return delay;
}

absl::Status WriteSmallFileAtomically(const std::string& path, const std::string& contents) {
  const std::string tmp = TempPathFor(fs::path(path));
  Fd fd(::open(tmp.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600));
  if (fd.get() < 0) return absl::ErrnoToStatus(errno, absl::StrCat("cannot create ", tmp));
  absl::Status s = WriteAll(fd.get(), contents.data(), contents.size(), tmp);
  if (s.ok() && ::fsync(fd.get()) != 0) {
    s = absl::ErrnoToStatus(errno, absl::StrCat("cannot fsync ", tmp));
  }
  if (s.ok() && ::close(fd.release()) != 0) {
    s = absl::ErrnoToStatus(errno, absl::StrCat("cannot close ", tmp));
  }
  if (s.ok() && ::rename(tmp.c_str(), path.c_str()) != 0) {
    s = absl::ErrnoToStatus(errno, absl::StrCat("cannot rename ", tmp, " to ", path));
  }
  if (!s.ok()) ::unlink(tmp.c_str());
  return s;
}

}  // namespace

absl::StatusOr<std::string> WriteCheckpoint(const std::string& path, const TensorMap& tensors,
                                            const fp8d::v1::CheckpointMetadata& meta) {
  fp8d::v1::CheckpointMetadata m = meta;
  if (m.format_version() == 0) m.set_format_version(kCheckpointFormatVersion);
  std::string meta_json;
  if (auto s = google::protobuf::util::MessageToJsonString(m, &meta_json); !s.ok()) {
    return absl::InternalError(absl::StrCat("cannot encode checkpoint metadata: ", std::string(s.message())));
  }
  // The content hash is taken over the header as a reader will parse it, so both sides hash the
  // same description of every tensor.
  const std::map<std::string, std::string> metadata = {{kCheckpointMetadataKey, meta_json}};
  absl::StatusOr<std::string> unhashed = SerializeSafetensorsHeader(tensors, metadata);
  if (!unhashed.ok()) return unhashed.status();
  absl::StatusOr<SafetensorsHeader> described = ParseSafetensorsHeader(
      *unhashed, static_cast<int64_t>(unhashed->size()) + SafetensorsDataBytes(tensors));
  if (!described.ok()) return described.status();
  Sha256 content;
  HashHeaderMeaning(*described, &content);
  for (const auto& [name, t] : tensors) {
    content.Update(std::string_view(reinterpret_cast<const char*>(t.data.data()),
                                    t.data.size() * sizeof(float)));
  }
  absl::StatusOr<std::string> header = SerializeSafetensorsHeader(
      tensors,
      {{kCheckpointMetadataKey, meta_json}, {kCheckpointContentShaKey, content.HexDigest()}});
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
  Fd fd(::open(tmp.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600));
  if (fd.get() < 0) return absl::ErrnoToStatus(errno, absl::StrCat("cannot create ", tmp));

  Sha256 file_sha;  // of the bytes as written, for the .sha256 record
  file_sha.Update(*header);
  absl::Status s = WriteAll(fd.get(), header->data(), header->size(), tmp);
  for (auto it = tensors.begin(); s.ok() && it != tensors.end(); ++it) {
    const std::string_view bytes(reinterpret_cast<const char*>(it->second.data.data()),
                                 it->second.data.size() * sizeof(float));
    file_sha.Update(bytes);
    s = WriteAll(fd.get(), bytes.data(), bytes.size(), tmp);
  }
  if (s.ok() && WriteDelay().count() > 0) std::this_thread::sleep_for(WriteDelay());
  if (s.ok() && ::fsync(fd.get()) != 0) s = absl::ErrnoToStatus(errno, absl::StrCat("cannot fsync ", tmp));
  if (s.ok() && ::close(fd.release()) != 0) s = absl::ErrnoToStatus(errno, absl::StrCat("cannot close ", tmp));
  const std::string digest = file_sha.HexDigest();
  if (s.ok()) {
    s = WriteSmallFileAtomically(absl::StrCat(path, kCheckpointShaSuffix),
                                 absl::StrCat(digest, "  ", target.filename().string(), "\n"));
  }
  if (s.ok() && ::rename(tmp.c_str(), path.c_str()) != 0) {
    s = absl::ErrnoToStatus(errno, absl::StrCat("cannot rename ", tmp, " to ", path));
  }
  if (!s.ok()) {
    ::unlink(tmp.c_str());
    return s;
  }
  // The rename is durable only once the directory entry is on disk.
  if (absl::Status synced = FsyncDirectory(target.parent_path()); !synced.ok()) return synced;
  return digest;
}

absl::StatusOr<std::string> ReadRecordedSha256(const std::string& path) {
  const std::string record = absl::StrCat(path, kCheckpointShaSuffix);
  std::ifstream in(record);
  if (!in) return absl::NotFoundError(absl::StrCat("no SHA-256 record ", record));
  std::string line;
  std::getline(in, line);
  const std::vector<std::string> fields = absl::StrSplit(line, ' ', absl::SkipEmpty());
  if (fields.empty() || fields[0].size() != 64 ||
      fields[0].find_first_not_of("0123456789abcdef") != std::string::npos) {
    return absl::DataLossError(absl::StrCat("SHA-256 record ", record, " is malformed"));
  }
  return fields[0];
}

int RemoveStaleCheckpointFiles(const std::string& dir) {
  int removed = 0;
  std::error_code ec;
  for (const auto& entry : fs::directory_iterator(dir, ec)) {
    const std::string name = entry.path().filename().string();
    bool stale = false;
    // Temp files are ".<target>.tmp-<pid>-<n>": stale once <pid> no longer runs.
    if (const size_t at = name.rfind(".tmp-"); name[0] == '.' && at != std::string::npos) {
      const std::vector<std::string> parts = absl::StrSplit(name.substr(at + 5), '-');
      int pid = 0;
      stale = parts.size() == 2 && absl::SimpleAtoi(parts[0], &pid) && pid > 0 &&
              pid != ::getpid() && ::kill(pid, 0) != 0 && errno == ESRCH;
    } else if (absl::EndsWith(name, kCheckpointShaSuffix)) {
      const std::string checkpoint =
          entry.path().string().substr(0, entry.path().string().size() - 7);
      stale = !fs::exists(checkpoint, ec);
    }
    if (stale && fs::remove(entry.path(), ec)) ++removed;
  }
  return removed;
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
  if (absl::Status s = CheckContentHash(*header, bytes, path); !s.ok()) return s;
  absl::StatusOr<fp8d::v1::CheckpointMetadata> meta = MetadataFromHeader(*header, path);
  if (!meta.ok()) return meta.status();
  absl::StatusOr<SafetensorsFile> parsed = ParseSafetensors(bytes);
  if (!parsed.ok()) return CheckpointLoss(path, parsed.status().message());
  LoadedCheckpoint out;
  out.tensors = std::move(parsed->tensors);
  out.meta = *std::move(meta);
  return out;
}

absl::Status VerifyCheckpoint(const std::string& path) {
  Fd fd(-1);
  absl::StatusOr<int64_t> size = OpenCheckpoint(path, &fd);
  if (!size.ok()) return size.status();
  MappedFile file;
  if (absl::Status s = file.Map(fd.get(), *size, path); !s.ok()) return s;
  absl::StatusOr<SafetensorsHeader> header = ParseSafetensorsHeader(file.view(), *size);
  if (!header.ok()) return CheckpointLoss(path, header.status().message());
  return CheckContentHash(*header, file.view(), path);
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
