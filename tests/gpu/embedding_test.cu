// Embedding kernels against core/ref/embedding.h. The backward sums each token's rows in the
// reference's order, so it must match bit for bit.
#include <cstdint>
#include <string>
#include <vector>

#include "core/ref/embedding.h"
#include "gtest/gtest.h"
#include "kernels/embedding.cuh"
#include "tests/gpu/gpu_test_util.h"

namespace fp8d {
namespace {

using testing::DeviceBuffer;
using testing::RandomNormal;
using testing::RandomTokens;
using testing::SameBytes;
using testing::ToBf16;
using testing::ToFloat;

struct EmbeddingShape {
  int n;
  int dim;
  int vocab;
};

class GpuEmbeddingTest : public testing::GpuTest<EmbeddingShape> {
 protected:
  int n() const { return GetParam().n; }
  int dim() const { return GetParam().dim; }
  int vocab() const { return GetParam().vocab; }
};

TEST_P(GpuEmbeddingTest, ForwardIsBf16RoundedLookup) {
  const std::vector<float> table =
      RandomNormal(static_cast<size_t>(vocab()) * dim(), 1, 0.02f, /*bf16_exact=*/false);
  const std::vector<int32_t> tokens = RandomTokens(n(), vocab(), 2);
  std::vector<float> out_ref(static_cast<size_t>(n()) * dim());
  ref::EmbeddingForward(tokens.data(), table.data(), out_ref.data(), n(), dim());
  for (float& v : out_ref) v = testing::RoundToBf16(v);

  DeviceBuffer<float> d_table(table);
  DeviceBuffer<int32_t> d_tokens(tokens);
  DeviceBuffer<__nv_bfloat16> d_out(static_cast<size_t>(n()) * dim());
  kernels::EmbeddingForward(nullptr, d_out.get(), d_tokens.get(), d_table.get(), n(), dim());
  EXPECT_TRUE(SameBytes(ToFloat(d_out.Download()), out_ref));
}

TEST_P(GpuEmbeddingTest, BackwardAccumulatesBitIdenticalToReference) {
  const std::vector<int32_t> tokens = RandomTokens(n(), vocab(), 3);
  const std::vector<float> dout = RandomNormal(static_cast<size_t>(n()) * dim(), 4);
  // Start from a non-zero gradient: the kernel adds, as micro-batches and the tied LM head do.
  const std::vector<float> dtable0 =
      RandomNormal(static_cast<size_t>(vocab()) * dim(), 5, 1.f, false);
  std::vector<float> dtable_ref = dtable0;
  ref::EmbeddingBackward(tokens.data(), dout.data(), dtable_ref.data(), n(), dim());

  DeviceBuffer<int32_t> d_tokens(tokens);
  DeviceBuffer<__nv_bfloat16> d_dout(ToBf16(dout));
  DeviceBuffer<float> d_dtable(dtable0);
  DeviceBuffer<char> ws(kernels::EmbeddingBackwardWorkspaceBytes(n(), vocab()));
  kernels::EmbeddingBackward(nullptr, d_dtable.get(), d_tokens.get(), d_dout.get(), n(), dim(),
                             vocab(), ws.get(), ws.size());
  EXPECT_TRUE(SameBytes(d_dtable.Download(), dtable_ref));
}

TEST_P(GpuEmbeddingTest, BackwardWithOneRepeatedTokenMatchesReference) {
  // Every row lands on the same gradient row: the worst case for ordering and load balance.
  const std::vector<int32_t> tokens(n(), vocab() - 1);
  const std::vector<float> dout = RandomNormal(static_cast<size_t>(n()) * dim(), 6);
  std::vector<float> dtable_ref(static_cast<size_t>(vocab()) * dim(), 0.f);
  ref::EmbeddingBackward(tokens.data(), dout.data(), dtable_ref.data(), n(), dim());

  DeviceBuffer<int32_t> d_tokens(tokens);
  DeviceBuffer<__nv_bfloat16> d_dout(ToBf16(dout));
  DeviceBuffer<float> d_dtable(std::vector<float>(dtable_ref.size(), 0.f));
  DeviceBuffer<char> ws(kernels::EmbeddingBackwardWorkspaceBytes(n(), vocab()));
  kernels::EmbeddingBackward(nullptr, d_dtable.get(), d_tokens.get(), d_dout.get(), n(), dim(),
                             vocab(), ws.get(), ws.size());
  EXPECT_TRUE(SameBytes(d_dtable.Download(), dtable_ref));
}

INSTANTIATE_TEST_SUITE_P(Shapes, GpuEmbeddingTest,
                         ::testing::Values(EmbeddingShape{1, 8, 4}, EmbeddingShape{100, 33, 7},
                                           EmbeddingShape{1000, 64, 256},
                                           EmbeddingShape{4099, 130, 50304},
                                           EmbeddingShape{16384, 257, 300}),
                         [](const ::testing::TestParamInfo<EmbeddingShape>& info) {
                           return std::to_string(info.param.n) + "tok_" +
                                  std::to_string(info.param.dim) + "d_" +
                                  std::to_string(info.param.vocab) + "v";
                         });

}  // namespace
}  // namespace fp8d
