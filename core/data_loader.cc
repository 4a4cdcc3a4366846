#include "core/data_loader.h"

#include <glob.h>
#include <sys/stat.h>

#include <fstream>

#include <algorithm>
#include <cmath>
#include <numeric>

#include "absl/base/internal/raw_logging.h"
#include "absl/status/status.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "core/path_confinement.h"
#include "core/rng.h"
#include "core/text_dataset.h"
#include "core/token_shard.h"

namespace fp8d {
namespace {

enum class DataFormat { kText, kBin };

// Keeps the code of `s` and puts the spec field in front, so the user knows which path failed.
absl::Status WithField(const absl::Status& s, absl::string_view field) {
  return absl::Status(s.code(), absl::StrCat(field, ": ", s.message()));
}

absl::StatusOr<DataFormat> ResolveFormat(const std::string& format, const std::string& pattern) {
  if (format.empty() || format == "auto") {
    return absl::EndsWith(pattern, ".bin") ? DataFormat::kBin : DataFormat::kText;
  }
  if (format == "text") return DataFormat::kText;
  if (format == "bin") return DataFormat::kBin;
  return absl::InvalidArgumentError(
      absl::StrCat("data.format is '", format, "'; allowed: auto, text, bin"));
}

bool IsGlob(const std::string& path) { return path.find_first_of("*?[") != std::string::npos; }

// The files `pattern` names, confined to `root`, in sorted order.
absl::StatusOr<std::vector<std::string>> ResolveFiles(const std::string& root,
                                                      const std::string& pattern,
                                                      absl::string_view field) {
  absl::StatusOr<std::string> confined = ConfinePath(root, pattern, field);
  if (!confined.ok()) return confined.status();
  if (!IsGlob(pattern)) return std::vector<std::string>{*confined};

  glob_t g{};
  const int rc = ::glob(confined->c_str(), 0, nullptr, &g);
  std::vector<std::string> files;
  if (rc == 0) files.assign(g.gl_pathv, g.gl_pathv + g.gl_pathc);
  ::globfree(&g);
  if (rc == GLOB_NOMATCH || files.empty()) {
    return absl::NotFoundError(absl::StrCat(field, ": no file matches '", pattern, "'"));
  }
  if (rc != 0) return absl::InternalError(absl::StrCat(field, ": glob of '", pattern, "' failed"));
  std::sort(files.begin(), files.end());
  // A match may be a symlink that points out of the root.
  for (std::string& f : files) {
    absl::StatusOr<std::string> c = ConfinePath(root, f, field);
    if (!c.ok()) return c.status();
    f = *c;
  }
  return files;
}

// A data file as DataLoader reads it: a non-empty regular file, and for shards a header that
// fits the file (a text file read as `bin` has no shard magic). `shown` is the path as the user
// wrote it when it names one file.
absl::Status CheckDataFile(const std::string& file, DataFormat format, absl::string_view field,
                           const std::string& shown) {
  struct stat st;
  if (::stat(file.c_str(), &st) != 0) {
    return absl::NotFoundError(absl::StrCat(field, " `", shown, "` not found"));
  }
  if (S_ISDIR(st.st_mode)) {
    return absl::InvalidArgumentError(absl::StrCat(
        field, " `", shown, "` is a directory: name a text file, a .bin shard or a glob of "
        "shards (e.g. dir/*.bin)"));
  }
  if (!S_ISREG(st.st_mode)) {
    return absl::InvalidArgumentError(absl::StrCat(field, " `", shown, "` is not a regular file"));
  }
  if (st.st_size == 0) {
    return absl::InvalidArgumentError(absl::StrCat(field, " `", shown, "` is empty"));
  }
  if (format != DataFormat::kBin) return absl::OkStatus();
  std::string header(static_cast<size_t>(kTokenShardHeaderBytes), '\0');
  std::ifstream in(file, std::ios::binary);
  in.read(header.data(), kTokenShardHeaderBytes);
  header.resize(static_cast<size_t>(std::max<std::streamsize>(0, in.gcount())));
  absl::Status s = CheckTokenShardHeader(header, st.st_size, shown);
  if (s.ok()) return s;
  return absl::Status(s.code(), absl::StrCat(field, ": ", s.message(),
                                             " (data.format bin reads llm.c token shards; a "
                                             "text file needs data.format text)"));
}

// Appends every file's tokens, checking each against the vocabulary where it was read so the
// message can say which file and which position.
absl::Status LoadTokens(const std::vector<std::string>& files, DataFormat format, int vocab_size,
                        absl::string_view field, std::vector<int32_t>* out) {
  for (const std::string& file : files) {
    if (absl::Status s = CheckDataFile(file, format, field, file); !s.ok()) return s;
    const size_t first = out->size();
    absl::Status s = format == DataFormat::kBin ? ReadTokenShard(file, out)
                                                : ReadTextTokens(file, out);
    if (!s.ok()) return WithField(s, field);
    for (size_t i = first; i < out->size(); ++i) {
      if ((*out)[i] >= vocab_size) {
        return absl::InvalidArgumentError(absl::StrCat(
            field, ": token id ", (*out)[i], " at token index ", i - first, " of ", file,
            " is outside the model's vocabulary (vocab_size ", vocab_size, ")",
            format == DataFormat::kText ? "; text uses byte tokens and needs vocab_size 256" : ""));
      }
    }
  }
  return absl::OkStatus();
}

// Number of (seq_len+1)-token windows at stride seq_len that fit in n tokens.
int64_t NumWindows(int64_t n, int seq_len) { return n <= seq_len ? 0 : (n - 1) / seq_len; }

absl::Status CheckEnoughForBatch(int64_t tokens, int batch, int seq_len, absl::string_view what) {
  const int64_t need = static_cast<int64_t>(batch) * seq_len + 1;
  if (tokens < need) {
    return absl::InvalidArgumentError(absl::StrCat(
        what, " has ", tokens, " tokens; one batch of batch_size ", batch, " x seq_len ", seq_len,
        " needs at least ", need));
  }
  return absl::OkStatus();
}

// Mixes the epoch into the seed so that each epoch's order is independent of the others; a plain
// seed + epoch would give SplitMix64 streams that are shifts of one another.
uint64_t EpochSeed(uint64_t order_seed, int64_t epoch) {
  Rng mix(order_seed ^ (0xD1B54A32D192ED03ull * static_cast<uint64_t>(epoch + 1)));
  return mix.NextU64();
}

}  // namespace

absl::StatusOr<std::unique_ptr<DataLoader>> DataLoader::Open(const fp8d::v1::DataSpec& data,
                                                             const std::string& data_root,
                                                             int vocab_size, int batch,
                                                             int seq_len, uint64_t seed) {
  if (batch < 1) return absl::InvalidArgumentError(absl::StrCat("batch_size is ", batch, "; must be >= 1"));
  if (seq_len < 1) return absl::InvalidArgumentError(absl::StrCat("seq_len is ", seq_len, "; must be >= 1"));
  if (vocab_size < 1) {
    return absl::InvalidArgumentError(absl::StrCat("vocab_size is ", vocab_size, "; must be >= 1"));
  }
  if (data.train().empty()) return absl::InvalidArgumentError("data.train is empty; name a text file or .bin shard(s)");
  float val_fraction = kDefaultValFraction;
  if (data.has_val_fraction()) {
    val_fraction = data.val_fraction();
    if (!(val_fraction > 0.f && val_fraction < 0.5f)) {
      return absl::InvalidArgumentError(
          absl::StrCat("data.val_fraction is ", val_fraction, "; allowed: 0 < f < 0.5"));
    }
  }
  absl::StatusOr<DataFormat> format = ResolveFormat(data.format(), data.train());
  if (!format.ok()) return format.status();

  std::unique_ptr<DataLoader> loader(new DataLoader());
  loader->byte_level_ = *format == DataFormat::kText;
  loader->batch_ = batch;
  loader->seq_len_ = seq_len;
  loader->order_seed_ = seed;

  absl::StatusOr<std::vector<std::string>> train_files = ResolveFiles(data_root, data.train(), "data.train");
  if (!train_files.ok()) return train_files.status();
  if (absl::Status s = LoadTokens(*train_files, *format, vocab_size, "data.train", &loader->train_);
      !s.ok()) {
    return s;
  }

  if (!data.val().empty()) {
    absl::StatusOr<DataFormat> val_format = ResolveFormat(data.format(), data.val());
    if (!val_format.ok()) return val_format.status();
    if (*val_format != *format) {
      return absl::InvalidArgumentError(absl::StrCat(
          "data.val '", data.val(), "' is not in the same format as data.train '", data.train(),
          "' (text vs .bin)"));
    }
    absl::StatusOr<std::vector<std::string>> val_files = ResolveFiles(data_root, data.val(), "data.val");
    if (!val_files.ok()) return val_files.status();
    if (absl::Status s = LoadTokens(*val_files, *format, vocab_size, "data.val", &loader->val_);
        !s.ok()) {
      return s;
    }
    if (absl::Status s = CheckEnoughForBatch(static_cast<int64_t>(loader->val_.size()), batch,
                                             seq_len, absl::StrCat("data.val '", data.val(), "'"));
        !s.ok()) {
      return s;
    }
  } else {
    // Hold out the tail of train, so validation text was never trained on.
    const int64_t n = static_cast<int64_t>(loader->train_.size());
    const int64_t n_val = static_cast<int64_t>(std::floor(static_cast<double>(n) * val_fraction));
    if (absl::Status s = CheckEnoughForBatch(
            n_val, batch, seq_len,
            absl::StrCat("the validation split (last ", val_fraction, " of data.train '",
                         data.train(), "', set data.val or data.val_fraction)"));
        !s.ok()) {
      return s;
    }
    loader->val_.assign(loader->train_.end() - n_val, loader->train_.end());
    loader->train_.resize(n - n_val);
    loader->train_.shrink_to_fit();
  }
  if (absl::Status s = CheckEnoughForBatch(static_cast<int64_t>(loader->train_.size()), batch,
                                           seq_len,
                                           absl::StrCat("the training split of data.train '",
                                                        data.train(), "'"));
      !s.ok()) {
    return s;
  }
  loader->num_train_windows_ = NumWindows(static_cast<int64_t>(loader->train_.size()), seq_len);
  loader->ShuffleEpoch();
  return loader;
}

void DataLoader::ShuffleEpoch() {
  order_.resize(num_train_windows_);
  std::iota(order_.begin(), order_.end(), int64_t{0});
  Rng rng(EpochSeed(order_seed_, epoch_));
  // Fisher-Yates with fp8d::Rng: std::shuffle's algorithm is implementation-defined.
  for (int64_t i = num_train_windows_ - 1; i > 0; --i) {
    const int64_t j = static_cast<int64_t>(rng.NextBelow(static_cast<uint64_t>(i + 1)));
    std::swap(order_[i], order_[j]);
  }
}

TokenBatch DataLoader::WindowsToBatch(const std::vector<int32_t>& tokens,
                                      const int64_t* window_starts) const {
  TokenBatch b;
  b.batch = batch_;
  b.seq_len = seq_len_;
  b.inputs.resize(static_cast<size_t>(batch_) * seq_len_);
  b.targets.resize(b.inputs.size());
  for (int i = 0; i < batch_; ++i) {
    const int32_t* w = tokens.data() + window_starts[i];
    std::copy(w, w + seq_len_, b.inputs.begin() + static_cast<size_t>(i) * seq_len_);
    std::copy(w + 1, w + 1 + seq_len_, b.targets.begin() + static_cast<size_t>(i) * seq_len_);
  }
  return b;
}

TokenBatch DataLoader::NextTrainBatch() {
  if (cursor_ + batch_ > num_train_windows_) {
    ++epoch_;
    cursor_ = 0;
    ShuffleEpoch();
  }
  std::vector<int64_t> starts(batch_);
  for (int i = 0; i < batch_; ++i) starts[i] = order_[cursor_ + i] * seq_len_;
  cursor_ += batch_;
  return WindowsToBatch(train_, starts.data());
}

int64_t DataLoader::NumValBatches() const {
  return NumWindows(static_cast<int64_t>(val_.size()), seq_len_) / batch_;
}

TokenBatch DataLoader::ValBatch(int64_t index) const {
  ABSL_RAW_CHECK(index >= 0 && index < NumValBatches(), "validation batch index out of range");
  std::vector<int64_t> starts(batch_);
  for (int i = 0; i < batch_; ++i) starts[i] = (index * batch_ + i) * seq_len_;
  return WindowsToBatch(val_, starts.data());
}

fp8d::v1::DataPosition DataLoader::Position() const {
  fp8d::v1::DataPosition p;
  p.set_epoch(epoch_);
  p.set_cursor(cursor_);
  p.set_order_seed(order_seed_);
  return p;
}

absl::Status DataLoader::Restore(const fp8d::v1::DataPosition& position) {
  if (position.epoch() < 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("data position epoch is ", position.epoch(), "; must be >= 0"));
  }
  if (position.cursor() < 0 || position.cursor() > num_train_windows_) {
    return absl::InvalidArgumentError(absl::StrCat(
        "data position cursor is ", position.cursor(), "; allowed: 0..", num_train_windows_,
        " (the number of training windows; was the data or seq_len changed?)"));
  }
  order_seed_ = position.order_seed();
  epoch_ = position.epoch();
  cursor_ = position.cursor();
  ShuffleEpoch();
  return absl::OkStatus();
}

int64_t DataLoader::train_tokens() const { return static_cast<int64_t>(train_.size()); }
int64_t DataLoader::val_tokens() const { return static_cast<int64_t>(val_.size()); }
bool DataLoader::byte_level() const { return byte_level_; }

absl::Status CheckDataFiles(const fp8d::v1::DataSpec& data, const std::string& data_root) {
  absl::StatusOr<DataFormat> format = ResolveFormat(data.format(), data.train());
  if (!format.ok()) return format.status();
  for (const auto& [field, pattern] : {std::pair<absl::string_view, std::string>{
                                           "data.train", data.train()},
                                       {"data.val", data.val()}}) {
    if (pattern.empty()) continue;
    absl::StatusOr<DataFormat> own = ResolveFormat(data.format(), pattern);
    if (!own.ok()) return own.status();
    if (*own != *format) {
      return absl::InvalidArgumentError(absl::StrCat(
          "data.val '", data.val(), "' is not in the same format as data.train '", data.train(),
          "' (text vs .bin)"));
    }
    absl::StatusOr<std::vector<std::string>> files = ResolveFiles(data_root, pattern, field);
    if (!files.ok()) return files.status();
    for (const std::string& file : *files) {
      const std::string& shown = IsGlob(pattern) ? file : pattern;
      if (absl::Status s = CheckDataFile(file, *format, field, shown); !s.ok()) return s;
    }
  }
  return absl::OkStatus();
}

}  // namespace fp8d
