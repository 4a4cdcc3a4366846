#include "kernels/memory_plan.h"

#include <cuda_runtime.h>

#include <algorithm>
#include <cstdlib>
#include <iostream>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "kernels/gemm.h"

namespace fp8d::kernels {
namespace {

constexpr size_t kBf16 = 2;
constexpr size_t kF32 = 4;
// Logits of one LM-head chunk stay under this, whatever the vocabulary.
constexpr size_t kLogitsChunkBytes = size_t{512} << 20;

const char* CategoryName(MemoryCategory c) {
  switch (c) {
    case MemoryCategory::kParameters: return "parameters";
    case MemoryCategory::kGradients: return "gradients";
    case MemoryCategory::kOptimizer: return "optimizer";
    case MemoryCategory::kActivations: return "activations";
    case MemoryCategory::kWorkspace: return "workspace";
  }
  return "?";
}

std::string GiB(double bytes) { return absl::StrFormat("%.2f GiB", bytes / (1u << 30)); }

}  // namespace

void MemoryPlan::Add(const std::string& name, MemoryCategory category, size_t bytes) {
  if (index_.count(name) != 0) {
    std::cerr << "MemoryPlan: region " << name << " added twice\n";
    std::abort();
  }
  const size_t offset = (end_ + kRegionAlignment - 1) / kRegionAlignment * kRegionAlignment;
  index_[name] = regions_.size();
  regions_.push_back({name, category, offset, bytes});
  end_ = offset + bytes;
}

size_t MemoryPlan::CategoryBytes(MemoryCategory category) const {
  size_t total = 0;
  for (const MemoryRegion& r : regions_)
    if (r.category == category) total += r.bytes;
  return total;
}

std::string MemoryPlan::Summary() const {
  std::string out;
  for (MemoryCategory c : {MemoryCategory::kParameters, MemoryCategory::kGradients,
                           MemoryCategory::kOptimizer, MemoryCategory::kActivations,
                           MemoryCategory::kWorkspace}) {
    absl::StrAppend(&out, CategoryName(c), " ", GiB(CategoryBytes(c)), ", ");
  }
  absl::StrAppend(&out, "runtime reserve ", GiB(kRuntimeReserveBytes), ", total ",
                  GiB(Estimate()));
  return out;
}

size_t MemoryPlan::OffsetOf(const std::string& name) const {
  auto it = index_.find(name);
  if (it == index_.end()) {
    std::cerr << "MemoryPlan: no region named " << name << "\n";
    std::abort();
  }
  return regions_[it->second].offset;
}

absl::Status CheckFits(const MemoryPlan& plan, int64_t free_bytes, int64_t total_bytes) {
  if (plan.Estimate() <= free_bytes) return absl::OkStatus();
  return absl::ResourceExhaustedError(absl::StrCat(
      "the job needs ", GiB(plan.Estimate()), " of GPU memory but only ", GiB(free_bytes),
      " of ", GiB(total_bytes), " is free (", plan.Summary(),
      "); lower the batch size or sequence length, or pick a smaller model"));
}

int64_t LmHeadChunkRows(const ModelConfig& model, const BatchShape& shape) {
  const int64_t by_bytes = static_cast<int64_t>(kLogitsChunkBytes / (kBf16 * model.vocab_size));
  const int64_t rounded = std::max<int64_t>(128, by_bytes / 128 * 128);
  return std::min(shape.tokens(), rounded);
}

MemoryPlan PlanTrainingMemory(const ModelConfig& m, const BatchShape& shape,
                              size_t attention_workspace_bytes, size_t norm_workspace_bytes) {
  MemoryPlan plan;
  const size_t params = static_cast<size_t>(m.ParamCount());
  plan.Add("param.f32", MemoryCategory::kParameters, params * kF32);
  plan.Add("param.bf16", MemoryCategory::kParameters, params * kBf16);
  plan.Add("grad.f32", MemoryCategory::kGradients, params * kF32);
  plan.Add("adam.m", MemoryCategory::kOptimizer, params * kF32);
  plan.Add("adam.v", MemoryCategory::kOptimizer, params * kF32);

  const size_t n = static_cast<size_t>(shape.tokens());
  const size_t d = m.d_model, ff = m.d_ff, qkv = m.qkv_dim();
  const size_t stats = size_t{static_cast<size_t>(shape.batch)} * m.n_head * shape.seq_len;
  auto act = [&](const std::string& name, size_t bytes) {
    plan.Add(name, MemoryCategory::kActivations, bytes);
  };
  act("act.tokens", n * sizeof(int32_t));
  act("act.targets", n * sizeof(int32_t));
  // Saved for backward, per layer. res_in of layer l is the residual stream entering it.
  for (int l = 0; l < m.n_layer; ++l) {
    const std::string p = absl::StrCat("act.", l, ".");
    act(p + "res_in", n * d * kBf16);
    act(p + "ln1", n * d * kBf16);
    act(p + "rstd1", n * kF32);
    act(p + "qkv", n * qkv * kBf16);      // after RoPE: what attention reads
    act(p + "attn", n * d * kBf16);       // attention output, heads side by side
    act(p + "lse", stats * kF32);         // softmax log-sum-exp per (batch, head, query)
    act(p + "res_mid", n * d * kBf16);    // residual after attention
    act(p + "ln2", n * d * kBf16);
    act(p + "rstd2", n * kF32);
    act(p + "gate_up", n * 2 * ff * kBf16);
    act(p + "h", n * ff * kBf16);         // SwiGLU output, the down projection's input
  }
  act("act.final.res", n * d * kBf16);
  act("act.final.ln", n * d * kBf16);
  act("act.final.rstd", n * kF32);
  act("act.logits", static_cast<size_t>(LmHeadChunkRows(m, shape)) * m.vocab_size * kBf16);
  act("act.loss", n * kF32);

  // Backward scratch, reused layer after layer.
  plan.Add("scratch.dres", MemoryCategory::kActivations, n * d * kBf16);
  plan.Add("scratch.dln", MemoryCategory::kActivations, n * d * kBf16);
  plan.Add("scratch.dwide", MemoryCategory::kActivations, n * std::max(2 * ff, qkv) * kBf16);
  plan.Add("scratch.dnarrow", MemoryCategory::kActivations, n * std::max(ff, d) * kBf16);
  // Gradient-norm partials (a few thousand doubles) and single-float results.
  plan.Add("scratch.scalars", MemoryCategory::kWorkspace, size_t{64} << 10);

  plan.Add("ws.gemm", MemoryCategory::kWorkspace, kGemmWorkspaceBytes);
  plan.Add("ws.attention", MemoryCategory::kWorkspace, std::max<size_t>(attention_workspace_bytes, 256));
  plan.Add("ws.norm", MemoryCategory::kWorkspace, std::max<size_t>(norm_workspace_bytes, 256));
  return plan;
}

absl::StatusOr<DeviceSlab> DeviceSlab::Allocate(const MemoryPlan& plan) {
  size_t free_bytes = 0, total_bytes = 0;
  const cudaError_t err = cudaMemGetInfo(&free_bytes, &total_bytes);
  if (err != cudaSuccess) {
    return absl::FailedPreconditionError(
        absl::StrCat("cudaMemGetInfo failed: ", cudaGetErrorString(err)));
  }
  absl::Status fits = CheckFits(plan, static_cast<int64_t>(free_bytes),
                                static_cast<int64_t>(total_bytes));
  if (!fits.ok()) return fits;
  DeviceSlab slab;
  void* p = nullptr;
  const cudaError_t alloc = cudaMalloc(&p, plan.slab_bytes());
  if (alloc != cudaSuccess) {
    cudaGetLastError();  // clear the sticky-free allocation error
    return absl::ResourceExhaustedError(absl::StrCat(
        "cudaMalloc of ", GiB(plan.slab_bytes()), " failed (", cudaGetErrorString(alloc),
        ") although ", GiB(free_bytes), " was reported free: ", plan.Summary()));
  }
  slab.base_ = static_cast<char*>(p);
  slab.bytes_ = plan.slab_bytes();
  return slab;
}

DeviceSlab::DeviceSlab(DeviceSlab&& o) noexcept
    : base_(std::exchange(o.base_, nullptr)), bytes_(std::exchange(o.bytes_, 0)) {}

DeviceSlab& DeviceSlab::operator=(DeviceSlab&& o) noexcept {
  if (this != &o) {
    if (base_ != nullptr) cudaFree(base_);
    base_ = std::exchange(o.base_, nullptr);
    bytes_ = std::exchange(o.bytes_, 0);
  }
  return *this;
}

DeviceSlab::~DeviceSlab() {
  if (base_ != nullptr) cudaFree(base_);
}

}  // namespace fp8d::kernels
