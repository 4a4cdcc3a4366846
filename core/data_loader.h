// Training and validation token batches from text files (byte-level tokenizer) or llm.c token
// shards, with a train/validation split, a deterministic shuffled order per epoch, and a position
// that checkpoints save so a resumed job sees exactly the batches the original run would have.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "core/engine.h"
#include "fp8d/v1/checkpoint.pb.h"
#include "fp8d/v1/job.pb.h"

namespace fp8d {

inline constexpr float kDefaultValFraction = 0.05f;

// What DataLoader::Open would refuse about the files themselves, checked without reading their
// tokens, so the daemon can answer at submit time: every path confined to `data_root`
// (core/path_confinement.h), each named file present (NOT_FOUND), a regular file and not a
// directory, not empty, and for `.bin` shards (format bin, or auto with a .bin name) a valid
// token-shard header that agrees with the file's size (a text file given `format: bin` fails
// here). Errors name the field (data.train, data.val) and the path.
absl::Status CheckDataFiles(const fp8d::v1::DataSpec& data, const std::string& data_root);

class DataLoader {
 public:
  // data: DataSpec (train, val, format auto|text|bin, val_fraction). Text files use the byte-level tokenizer
  // (token = byte value, vocab 256). llm.c .bin shards: 256 x int32 header, magic 20240520 (uint16 tokens) or
  // 20240801 (uint32 tokens), version, token count; `train` may be a glob of shards (sorted).
  // Errors (INVALID_ARGUMENT / NOT_FOUND / DATA_LOSS with the file name and what is wrong): bad magic, bad version,
  // truncated file (header count vs size), token >= vocab_size (say which token id, where, and the vocab size),
  // too little data for one batch, missing file, path outside data_root (PERMISSION_DENIED).
  static absl::StatusOr<std::unique_ptr<DataLoader>> Open(const fp8d::v1::DataSpec& data,
      const std::string& data_root, int vocab_size, int batch, int seq_len, uint64_t seed);

  // Next training micro-batch. Training windows are the non-overlapping (seq_len+1)-token windows at stride
  // seq_len over the train split; each epoch visits them in an order shuffled deterministically from
  // (seed, epoch) with fp8d::Rng (core/rng.h). Never fails after Open. An epoch ends when fewer than
  // `batch` windows remain; those are skipped for that epoch (a different set each epoch).
  TokenBatch NextTrainBatch();
  // Fixed validation batches, index in [0, NumValBatches()); the same every call.
  TokenBatch ValBatch(int64_t index) const;
  int64_t NumValBatches() const;
  fp8d::v1::DataPosition Position() const;        // epoch, cursor, order_seed
  // Exact: next batches equal the original run's. INVALID_ARGUMENT for a negative epoch or a
  // cursor outside [0, number of training windows].
  absl::Status Restore(const fp8d::v1::DataPosition& position);
  int64_t train_tokens() const;
  int64_t val_tokens() const;
  bool byte_level() const;                         // true for text: bits per byte = loss / ln 2

  int64_t num_train_windows() const { return num_train_windows_; }
  int batch() const { return batch_; }
  int seq_len() const { return seq_len_; }

 private:
  DataLoader() = default;
  void ShuffleEpoch();
  TokenBatch WindowsToBatch(const std::vector<int32_t>& tokens, const int64_t* window_starts) const;

  std::vector<int32_t> train_;
  std::vector<int32_t> val_;
  bool byte_level_ = false;
  int batch_ = 0;
  int seq_len_ = 0;
  int64_t num_train_windows_ = 0;
  uint64_t order_seed_ = 0;
  int64_t epoch_ = 0;
  int64_t cursor_ = 0;
  std::vector<int64_t> order_;  // this epoch's window indices, shuffled
};

}  // namespace fp8d
