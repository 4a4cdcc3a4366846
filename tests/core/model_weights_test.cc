// InitWeights: the values are one Rng::NextNormal stream over the matrices in ParamSpecs order,
// however many threads fill it, so every machine starts from the same weights.
#include "core/model_weights.h"

#include <cmath>
#include <string>

#include "absl/strings/match.h"
#include "core/model_config.h"
#include "core/rng.h"
#include "gtest/gtest.h"

namespace fp8d {
namespace {

// Larger than one parallel chunk per matrix, so chunk boundaries inside a tensor are covered.
ModelConfig SmallConfig() {
  ModelConfig c;
  c.n_layer = 2;
  c.d_model = 128;
  c.n_head = 4;
  c.n_kv_head = 2;
  c.d_ff = 384;
  c.vocab_size = 2500;  // embedding of 320,000 values: more than one chunk
  c.max_seq_len = 64;
  c.tie_embeddings = false;
  return c;
}

TEST(InitWeightsTest, EqualsTheSequentialNormalStreamOverTheMatrices) {
  const ModelConfig c = SmallConfig();
  const uint64_t seed = 42;
  const TensorMap got = InitWeights(c, seed);
  Rng rng(seed ^ 0x5EEDF00DC0FFEEull);
  const double out_std = c.init_std / std::sqrt(2.0 * c.n_layer);
  size_t checked = 0;
  for (const ParamSpec& spec : ParamSpecs(c)) {
    const HostTensor& t = got.at(spec.name);
    ASSERT_EQ(t.shape, spec.shape) << spec.name;
    if (spec.is_norm) {
      for (float v : t.data) ASSERT_EQ(v, 1.f) << spec.name;
      continue;
    }
    const bool out_proj = absl::EndsWith(spec.name, "o_proj.weight") ||
                          absl::EndsWith(spec.name, "down_proj.weight");
    const double std = out_proj ? out_std : c.init_std;
    for (size_t i = 0; i < t.data.size(); ++i) {
      ASSERT_EQ(t.data[i], static_cast<float>(rng.NextNormal() * std))
          << spec.name << " element " << i;
    }
    checked += t.data.size();
  }
  EXPECT_GT(checked, size_t{600000});
}

TEST(InitWeightsTest, SameSeedSameWeightsOtherSeedOtherWeights) {
  const ModelConfig c = SmallConfig();
  const TensorMap a = InitWeights(c, 7);
  const TensorMap b = InitWeights(c, 7);
  const TensorMap other = InitWeights(c, 8);
  const std::string name = "model.layers.1.mlp.down_proj.weight";
  EXPECT_EQ(a.at(name).data, b.at(name).data);
  EXPECT_NE(a.at(name).data, other.at(name).data);
}

}  // namespace
}  // namespace fp8d
