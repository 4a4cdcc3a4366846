// The reference attention kernels against core/ref/attention.h on BF16-rounded Q/K/V in one
// fused QKV buffer, with GQA groups, head dims that are not multiples of the warp size and
// sequence lengths that are not multiples of the block.
#include <cstdint>
#include <string>
#include <vector>

#include "core/ref/attention.h"
#include "gtest/gtest.h"
#include "kernels/attention_reference.cuh"
#include "tests/gpu/gpu_test_util.h"

namespace fp8d {
namespace {

using testing::Bf16Close;
using testing::DeviceBuffer;
using testing::RandomNormal;
using testing::SameBytes;
using testing::ToBf16;
using testing::ToFloat;

// The log-sum-exp is FP32 on both sides, but summed online on the GPU and in two passes in
// the reference, with different expf/logf.
constexpr float kLseRelTol = 1e-5f;
constexpr float kLseAbsTolFraction = 1e-5f;

struct AttentionShape {
  int batch;
  int seq_len;
  int n_head;
  int n_kv_head;
  int head_dim;
};

class GpuReferenceAttentionTest : public testing::GpuTest<AttentionShape> {
 protected:
  const AttentionShape& s() const { return GetParam(); }
  int stride() const { return (s().n_head + 2 * s().n_kv_head) * s().head_dim; }
  int64_t rows() const { return static_cast<int64_t>(s().batch) * s().seq_len; }
  size_t qkv_numel() const { return static_cast<size_t>(rows()) * stride(); }
  size_t out_numel() const { return static_cast<size_t>(rows()) * s().n_head * s().head_dim; }
  size_t lse_numel() const {
    return static_cast<size_t>(s().batch) * s().n_head * s().seq_len;
  }
  int k_offset() const { return s().n_head * s().head_dim; }
  int v_offset() const { return k_offset() + s().n_kv_head * s().head_dim; }

  ref::AttentionShape RefShape() const {
    ref::AttentionShape r;
    r.batch = s().batch;
    r.seq_len = s().seq_len;
    r.n_head = s().n_head;
    r.n_kv_head = s().n_kv_head;
    r.head_dim = s().head_dim;
    r.qkv_stride = stride();
    return r;
  }
  kernels::AttentionDims Dims() const {
    kernels::AttentionDims d;
    d.batch = s().batch;
    d.seq_len = s().seq_len;
    d.n_head = s().n_head;
    d.n_kv_head = s().n_kv_head;
    d.head_dim = s().head_dim;
    d.qkv_stride = stride();
    return d;
  }
};

TEST_P(GpuReferenceAttentionTest, ForwardMatchesReference) {
  const std::vector<float> qkv = RandomNormal(qkv_numel(), 1);
  std::vector<float> out_ref(out_numel()), lse_ref(lse_numel());
  ref::AttentionForward(qkv.data(), qkv.data() + k_offset(), qkv.data() + v_offset(),
                        out_ref.data(), lse_ref.data(), RefShape());

  DeviceBuffer<__nv_bfloat16> d_qkv(ToBf16(qkv)), d_out(out_numel());
  DeviceBuffer<float> d_lse(lse_numel());
  kernels::ReferenceAttentionForward(nullptr, d_out.get(), d_lse.get(), d_qkv.get(),
                                     d_qkv.get() + k_offset(), d_qkv.get() + v_offset(), Dims());
  EXPECT_TRUE(Bf16Close(ToFloat(d_out.Download()), out_ref));
  EXPECT_TRUE(testing::AllClose(d_lse.Download(), lse_ref, kLseRelTol, kLseAbsTolFraction));
}

TEST_P(GpuReferenceAttentionTest, BackwardMatchesReferenceAndIsDeterministic) {
  const std::vector<float> qkv = RandomNormal(qkv_numel(), 2);
  const std::vector<float> dout = RandomNormal(out_numel(), 3);
  DeviceBuffer<__nv_bfloat16> d_qkv(ToBf16(qkv)), d_out(out_numel()), d_dout(ToBf16(dout));
  DeviceBuffer<float> d_lse(lse_numel());
  const kernels::AttentionDims dims = Dims();
  kernels::ReferenceAttentionForward(nullptr, d_out.get(), d_lse.get(), d_qkv.get(),
                                     d_qkv.get() + k_offset(), d_qkv.get() + v_offset(), dims);
  // The reference backward sees the same (BF16) forward output and lse as the kernel.
  const std::vector<float> out = ToFloat(d_out.Download());
  const std::vector<float> lse = d_lse.Download();
  std::vector<float> dqkv_ref(qkv_numel());
  ref::AttentionBackward(dout.data(), qkv.data(), qkv.data() + k_offset(), qkv.data() + v_offset(),
                         out.data(), lse.data(), dqkv_ref.data(), dqkv_ref.data() + k_offset(),
                         dqkv_ref.data() + v_offset(), RefShape());

  DeviceBuffer<char> ws(kernels::ReferenceAttentionBackwardWorkspaceBytes(dims));
  std::vector<std::vector<__nv_bfloat16>> runs;
  for (int run = 0; run < 2; ++run) {
    DeviceBuffer<__nv_bfloat16> d_dqkv(qkv_numel());  // poisoned: every element must be written
    kernels::ReferenceAttentionBackward(nullptr, d_dqkv.get(), d_dqkv.get() + k_offset(),
                                        d_dqkv.get() + v_offset(), d_dout.get(), d_qkv.get(),
                                        d_qkv.get() + k_offset(), d_qkv.get() + v_offset(),
                                        d_out.get(), d_lse.get(), dims, ws.get(), ws.size());
    runs.push_back(d_dqkv.Download());
  }
  EXPECT_TRUE(Bf16Close(ToFloat(runs[0]), dqkv_ref));
  EXPECT_TRUE(SameBytes(runs[0], runs[1]));
}

INSTANTIATE_TEST_SUITE_P(Shapes, GpuReferenceAttentionTest,
                         ::testing::Values(AttentionShape{1, 1, 1, 1, 8},
                                           AttentionShape{2, 17, 4, 2, 16},
                                           AttentionShape{1, 64, 4, 1, 64},
                                           AttentionShape{2, 33, 6, 3, 40},
                                           AttentionShape{1, 130, 2, 2, 128},
                                           AttentionShape{1, 70, 2, 1, 256}),
                         [](const ::testing::TestParamInfo<AttentionShape>& info) {
                           const AttentionShape& s = info.param;
                           return "B" + std::to_string(s.batch) + "_T" +
                                  std::to_string(s.seq_len) + "_H" + std::to_string(s.n_head) +
                                  "_KV" + std::to_string(s.n_kv_head) + "_hd" +
                                  std::to_string(s.head_dim);
                         });

}  // namespace
}  // namespace fp8d
