// Llama-architecture model shape: presets, validation, parameter and FLOP counts.
#pragma once

#include <cstdint>
#include <string>

#include "absl/status/statusor.h"
#include "fp8d/v1/job.pb.h"

namespace fp8d {

struct ModelConfig {
  std::string preset;     // empty when given explicitly
  int n_layer = 0;
  int d_model = 0;
  int n_head = 0;
  int n_kv_head = 0;
  int d_ff = 0;
  int vocab_size = 0;
  int max_seq_len = 0;
  bool tie_embeddings = true;
  float rope_theta = 10000.f;
  float norm_eps = 1e-5f;
  float init_std = 0.02f;

  int head_dim() const { return d_model / n_head; }
  int kv_dim() const { return n_kv_head * head_dim(); }
  int qkv_dim() const { return d_model + 2 * kv_dim(); }

  // Trainable parameters (embedding counted once when tied).
  int64_t ParamCount() const;
  // Parameters that take part in matmuls per token: every Linear plus the LM head
  // (the embedding lookup is not a matmul). The "N" of 6N.
  int64_t MatmulParamCount() const;
  // Training FLOPs per token at sequence length T: 6N plus causal attention scores and
  // weighted values (12 * L * T * d_model for forward + backward, halved for causality).
  double TrainFlopsPerToken(int seq_len) const;
};

// Names of the presets, for error messages: "tiny, 124m, 350m, 1b, 3b".
std::string PresetNames();

// Resolves a preset plus overrides, or an explicit config, and validates every field.
// Errors are INVALID_ARGUMENT naming the field (`model.n_head`) and the allowed range.
absl::StatusOr<ModelConfig> ResolveModelConfig(const fp8d::v1::ModelConfig& proto);

// The resolved config as a proto with every field set.
fp8d::v1::ModelConfig ToProto(const ModelConfig& config);

}  // namespace fp8d
